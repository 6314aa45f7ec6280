"""The HPA port against cases from kubernetes/kubernetes' own tests.

Each test names the upstream test it ports (pkg/controller/podautoscaler/
replica_calculator_test.go and horizontal_test.go). CPU cases use 1-core requests, so a
utilization target of T % is a per-pod target of 10·T millicores and the levels are the
pods' millicores, as upstream.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import pytest

from lmoperator.autoscale import hpa
from lmoperator.autoscale.hpa import HpaPod, PodPhase

Running = PodPhase.RUNNING


def pods(
    levels: Sequence[float],
    *,
    n: int | None = None,
    unready: Collection[int] = (),
    phases: Sequence[PodPhase] | None = None,
    deleting: Collection[int] = (),
) -> list[HpaPod]:
    n = len(levels) if n is None else n
    out: list[HpaPod] = []
    for i in range(n):
        phase = phases[i] if phases else Running
        out.append(
            HpaPod(
                name=f"pod-{i}",
                value=levels[i] if i < len(levels) else None,
                phase=phase,
                counts_as_unready=i in unready,
                deleting=i in deleting,
            )
        )
    return out


def calc(current: int, pod_list: list[HpaPod], target: float, *, cpu: bool = False) -> int:
    return hpa.calc_plain_metric_replicas(current, pod_list, target, cpu=cpu).replicas


# -- replica_calculator_test.go -----------------------------------------------------


def test_replica_calc_scale_up() -> None:
    """TestReplicaCalcScaleUp"""
    assert calc(3, pods([300, 500, 700]), 300, cpu=True) == 5


def test_replica_calc_scale_up_unready_less_scale() -> None:
    """TestReplicaCalcScaleUpUnreadyLessScale: the unready pod counts as 0 on a scale-up."""
    assert calc(3, pods([300, 500, 700], unready={0}), 300, cpu=True) == 4


def test_replica_calc_scale_up_unready_no_scale() -> None:
    """TestReplicaCalcScaleUpUnreadyNoScale"""
    assert calc(3, pods([400, 500, 700], unready={1, 2}), 300, cpu=True) == 3


def test_replica_calc_scale_up_ignores_failed_pods() -> None:
    """TestReplicaCalcScaleUpIgnoresFailedPods"""
    phases = [Running, Running, PodPhase.FAILED, PodPhase.FAILED]
    assert calc(2, pods([500, 700], n=4, phases=phases), 300, cpu=True) == 4


def test_replica_calc_scale_up_ignores_deletion_pods() -> None:
    """TestReplicaCalcScaleUpIgnoresDeletionPods"""
    assert calc(2, pods([500, 700], n=4, deleting={2, 3}), 300, cpu=True) == 4


def test_replica_calc_scale_up_cm() -> None:
    """TestReplicaCalcScaleUpCM"""
    assert calc(3, pods([20000, 10000, 30000]), 15000) == 4


def test_replica_calc_scale_up_cm_unready_hot_cpu_no_less_scale() -> None:
    """TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale: readiness is ignored for pod
    metrics, so the unready pod's 50000 counts."""
    assert calc(3, pods([50000, 10000, 30000], unready={2}), 15000) == 6


def test_replica_calc_scale_up_cm_unready_hot_cpu_scale_would_scale_down() -> None:
    """TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown"""
    assert calc(3, pods([50000, 15000, 30000], unready={0, 2}), 15000) == 7


def test_replica_calc_scale_down() -> None:
    """TestReplicaCalcScaleDown"""
    assert calc(5, pods([100, 300, 500, 250, 250]), 500, cpu=True) == 3


def test_replica_calc_scale_down_cm() -> None:
    """TestReplicaCalcScaleDownCM"""
    assert calc(5, pods([12000] * 5), 20000) == 3


def test_replica_calc_scale_down_exclude_unscheduled_pods() -> None:
    """TestReplicaCalcScaleDownExcludeUnscheduledPods: Pending pods are left out."""
    phases = [Running] + [PodPhase.PENDING] * 4
    assert calc(5, pods([100], n=5, phases=phases, unready={1, 2, 3, 4}), 500, cpu=True) == 1


def test_replica_calc_scale_down_ignores_failed_pods() -> None:
    """TestReplicaCalcScaleDownIgnoresFailedPods"""
    phases = [Running] * 5 + [PodPhase.FAILED] * 2
    assert calc(5, pods([100, 300, 500, 250, 250], n=7, phases=phases), 500, cpu=True) == 3


def test_replica_calc_tolerance() -> None:
    """TestReplicaCalcTolerance: 102 % of target is within the 10 % tolerance."""
    # Upstream's requests are 0.9, 1.0, 1.1 cores: utilization is 3060 m / 3000 m.
    assert calc(3, pods([1020, 1020, 1020]), 1000, cpu=True) == 3


def test_replica_calc_tolerance_cm() -> None:
    """TestReplicaCalcToleranceCM"""
    assert calc(3, pods([20000, 21000, 21000]), 20000) == 3


def test_replica_calc_superfluous_metrics() -> None:
    """TestReplicaCalcSuperfluousMetrics: metrics of pods not in the list are dropped."""
    assert calc(4, pods([4000, 9500, 3000, 7000]), 1000, cpu=True) == 24


def test_replica_calc_missing_metrics() -> None:
    """TestReplicaCalcMissingMetrics: on a scale-down missing pods count as at target."""
    assert calc(4, pods([400, 95], n=4), 1000, cpu=True) == 3


def test_replica_calc_missing_metrics_no_change_eq() -> None:
    """TestReplicaCalcMissingMetricsNoChangeEq"""
    assert calc(2, pods([1000], n=2), 1000, cpu=True) == 2


def test_replica_calc_missing_metrics_no_change_gt() -> None:
    """TestReplicaCalcMissingMetricsNoChangeGt: counting the missing pod as 0 would turn
    a 190 % scale-up into a change within tolerance."""
    assert calc(2, pods([1900], n=2), 1000, cpu=True) == 2


def test_replica_calc_missing_metrics_no_change_lt() -> None:
    """TestReplicaCalcMissingMetricsNoChangeLt"""
    assert calc(2, pods([600], n=2), 1000, cpu=True) == 2


def test_replica_calc_missing_metrics_unready_change() -> None:
    """TestReplicaCalcMissingMetricsUnreadyChange"""
    assert calc(3, pods([100, 450], n=3, unready={0}), 500, cpu=True) == 3


def test_replica_calc_missing_metrics_unready_scale_up() -> None:
    """TestReplicaCalcMissingMetricsUnreadyScaleUp: missing and unready pods count as 0."""
    assert calc(3, pods([100, 2000], n=3, unready={0}), 500, cpu=True) == 4


def test_replica_calc_empty_metrics() -> None:
    """TestReplicaCalcEmptyMetrics: no metrics is an error, never zero load."""
    with pytest.raises(hpa.MetricsUnavailableError):
        calc(4, pods([], n=3), 1000, cpu=True)


# -- horizontal_test.go: TestScalingWithRules ---------------------------------------


def rules(
    pods_value: int, pods_period: int, percent: int, percent_period: int, window: int
) -> hpa.ScalingRules:
    """horizontal_test.go's generateScalingRules."""
    policies: list[hpa.ScalingPolicy] = []
    if pods_value:
        policies.append(hpa.ScalingPolicy(hpa.PolicyType.PODS, pods_value, pods_period))
    if percent:
        policies.append(hpa.ScalingPolicy(hpa.PolicyType.PERCENT, percent, percent_period))
    return hpa.ScalingRules(window, tuple(policies))


def uniform_events(changes: Sequence[int], period: int, now: float) -> list[hpa.ScaleEvent]:
    """horizontal_test.go's generateEventsUniformDistribution."""
    segment = period / len(changes)
    return [
        hpa.ScaleEvent(now - (period - segment * (i + 1) + segment / 2), c)
        for i, c in enumerate(changes)
    ]


NOW = 1_000_000.0

SCALING_WITH_RULES: list[tuple[Any, ...]] = [
    # (upstream case name, min, max, up rules, down rules, up events, current, pre, want, cond)
    ("prenormalized desired replicas within range", 3, 8, None, None, (), 5, 7, 7,
     "DesiredWithinRange"),
    ("prenormalized desired replicas < minReplicas", 2, 8, None, None, (), 3, 1, 2,
     "TooFewReplicas"),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", 1, 10, None, None, (), 20,
     1000, 10, "TooManyReplicas"),
    ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", 1,
     2000, rules(0, 0, 1, 60, 0), None, (), 3, 1000, 4, "ScaleUpLimit"),
    ("scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined "
     "policies", 3, 2000, None, rules(20, 60, 0, 0, 0), (), 1000, 3, 980, "ScaleDownLimit"),
    ("scaleUp with default behavior", 1, 1000, None, None, (), 10, 50, 20, "ScaleUpLimit"),
    ("scaleUp with pods policy larger than percent policy", 1, 1000,
     rules(100, 60, 100, 60, 0), None, (), 10, 500, 110, "ScaleUpLimit"),
    ("scaleUp with percent policy larger than pods policy", 1, 1000,
     rules(2, 60, 100, 60, 0), None, (), 10, 500, 20, "ScaleUpLimit"),
    ("scaleUp with pod policy limitation", 1, 1000, rules(30, 60, 0, 0, 0), None, (), 10, 50,
     40, "ScaleUpLimit"),
    ("scaleUp with percent policy limitation", 1, 1000, rules(0, 0, 200, 60, 0), None, (), 10,
     50, 30, "ScaleUpLimit"),
    ("scaleDown with percent policy larger than pod policy", 1, 1000, None,
     rules(20, 60, 1, 60, 300), (), 100, 2, 80, "ScaleDownLimit"),
    ("scaleDown with pod policy larger than percent policy", 1, 1000, None,
     rules(2, 60, 1, 60, 300), (), 100, 2, 98, "ScaleDownLimit"),
    ("scaleDown with spec MinReplicas limitation with large percent policy", 5, 1000, None,
     rules(0, 0, 100, 60, 300), (), 10, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation", 1, 1000, None, rules(5, 60, 0, 0, 300), (), 10, 2,
     5, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation", 1, 1000, None, rules(0, 0, 50, 60, 300), (),
     10, 5, 5, "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy and events", 1, 200,
     rules(300, 60, 0, 0, 0), None, (1, 5, 9), 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent "
     "scale up events", 1, 1000, rules(5, 120, 0, 0, 0), None, (1, 5, 9), 100, 500, 100,
     "ScaleUpLimit"),
    ("scaleUp with pod policy and previous scale up events", 1, 1000,
     rules(150, 120, 0, 0, 0), None, (1, 5, 9), 100, 500, 235, "ScaleUpLimit"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "lo", "hi", "up", "down", "events", "current", "pre", "want", "cond"),
    SCALING_WITH_RULES,
    ids=[c[0] for c in SCALING_WITH_RULES],
)
def test_scaling_with_rules(
    name: str,
    lo: int,
    hi: int,
    up: hpa.ScalingRules | None,
    down: hpa.ScalingRules | None,
    events: tuple[int, ...],
    current: int,
    pre: int,
    want: int,
    cond: str,
) -> None:
    """TestScalingWithRules (the rate and min/max part of the behavior controller)."""
    ctl = hpa.HorizontalPodAutoscaler(
        lo,
        hi,
        scale_up=up or hpa.DEFAULT_SCALE_UP,
        scale_down=down or hpa.DEFAULT_SCALE_DOWN,
        up_events=uniform_events(events, 120, NOW) if events else [],
    )
    assert ctl.limit_rate(NOW, current, pre) == (want, cond)


NORMALIZE: list[tuple[Any, ...]] = [
    # (upstream case name, recommendations as (minutes ago, replicas), pre, want, log length)
    ("empty log", [], 5, 5, 1),
    ("stabilize", [(2, 4), (1, 5)], 3, 5, 3),
    ("no stabilize", [(2, 1), (1, 2)], 3, 3, 3),
    ("no stabilize - old recommendations", [(10, 10), (9, 9)], 3, 3, 2),
    ("stabilize - old recommendations", [(10, 10), (1, 4), (2, 5), (9, 9)], 3, 5, 4),
]


@pytest.mark.parametrize(
    ("name", "recs", "pre", "want", "log_length"), NORMALIZE, ids=[c[0] for c in NORMALIZE]
)
def test_normalize_desired_replicas(
    name: str, recs: list[tuple[int, int]], pre: int, want: int, log_length: int
) -> None:
    """TestNormalizeDesiredReplicas: the 5-minute scale-down stabilization window."""
    ctl = hpa.HorizontalPodAutoscaler(1, 100)
    ctl.recommendations = [(NOW - minutes * 60, r) for minutes, r in recs]
    # Upstream's legacy stabilizeRecommendation is the highest recommendation in the
    # window; with behaviors that is the answer when scaling down from above it.
    stabilized, _ = ctl.stabilize(NOW, 10, pre)
    assert stabilized == want
    assert len(ctl.recommendations) == log_length


def test_calculate_scale_down_limit_with_behaviors_min_policy() -> None:
    """TestCalculateScaleDownLimitWithBehaviors (selectPolicy Min: the smaller change)."""
    r = hpa.ScalingRules(
        300,
        (
            hpa.ScalingPolicy(hpa.PolicyType.PODS, 2, 60),
            hpa.ScalingPolicy(hpa.PolicyType.PERCENT, 50, 60),
        ),
        hpa.SelectPolicy.MIN,
    )
    assert hpa.scale_down_limit(5, [], [], r, NOW) == 3


def test_missing_metrics_hold_the_current_count() -> None:
    """As the controller does on FailedGetMetrics: no metric, no change."""
    ctl = hpa.HorizontalPodAutoscaler(1, 10)
    decision = ctl.decide(NOW, 4, [(pods([], n=4), 5.0)])
    assert (decision.desired, decision.reason) == (4, "FailedGetMetrics")


def test_scale_down_waits_for_the_stabilization_window() -> None:
    """The default 300 s window: a scale-down waits until the high recommendation ages out."""
    ctl = hpa.HorizontalPodAutoscaler(1, 10)
    assert ctl.decide(NOW, 2, [(pods([20, 20]), 5.0)]).desired == 6
    later = ctl.decide(NOW + 15, 6, [(pods([1] * 6), 5.0)])
    assert later.desired == 6
    assert ctl.decide(NOW + 316, 6, [(pods([1] * 6), 5.0)]).desired == 2
