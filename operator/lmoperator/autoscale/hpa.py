"""The Kubernetes HorizontalPodAutoscaler's algorithm, ported faithfully as a baseline.

Sources: kubernetes/kubernetes `pkg/controller/podautoscaler/replica_calculator.go`
(`calcPlainMetricReplicas`, `groupPods`) and `horizontal.go`
(`stabilizeRecommendationWithBehaviors`, `convertDesiredReplicasWithBehaviorRate`,
`calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`), and
the documented defaults of `autoscaling/v2` behavior. `tests/unit/test_autoscale_hpa.py`
ports cases from the upstream test suites, each named after its upstream test.

Deliberate simplifications, none of which changes a decision in the cases ported:
- The CPU-only readiness rule (`cpuInitializationPeriod`, `delayOfInitialReadinessStatus`)
  is collapsed into one input: a Running pod with `counts_as_unready=True` is treated as
  unready when the metric is a CPU resource metric. For pod (custom) metrics upstream
  ignores readiness, and so does this port.
- Utilization of a resource is given as a per-pod value and a per-pod target in the
  same unit (upstream sums usage and requests; with equal requests they agree).
- Scale-to-zero and the `currentReplicas == 0` idle case are out of scope (LMService
  has at least one replica).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_TOLERANCE = 0.1
DEFAULT_SYNC_PERIOD_SECONDS = 15.0


class PodPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class HpaPod:
    """One pod as the replica calculator sees it; `value` None means no metric came."""

    name: str
    value: float | None
    phase: PodPhase = PodPhase.RUNNING
    counts_as_unready: bool = False
    deleting: bool = False


class MetricsUnavailableError(Exception):
    """No usable metric: upstream returns an error and the HPA does not scale."""


@dataclass(frozen=True)
class PodGroups:
    ready_count: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def group_pods(pods: Sequence[HpaPod], *, cpu: bool = False) -> PodGroups:
    """`groupPods`: deleted and failed pods are ignored, Pending ones unready, pods
    without a metric missing; readiness of Running pods matters for CPU only."""
    ready = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleting or pod.phase == PodPhase.FAILED:
            ignored.add(pod.name)
            continue
        if pod.phase == PodPhase.PENDING:
            unready.add(pod.name)
            continue
        if pod.value is None:
            missing.add(pod.name)
            continue
        if cpu and pod.counts_as_unready:
            unready.add(pod.name)
            continue
        ready += 1
    return PodGroups(ready, frozenset(unready), frozenset(missing), frozenset(ignored))


@dataclass(frozen=True)
class ReplicaCount:
    replicas: int
    usage: float  # the average over the pods with metrics, as upstream reports it


def calc_plain_metric_replicas(
    current_replicas: int,
    pods: Sequence[HpaPod],
    target: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    cpu: bool = False,
) -> ReplicaCount:
    """`calcPlainMetricReplicas`: desired = ceil(ratio x pods counted), with the
    missing-pod rule (at target on a scale-down, zero on a scale-up) and unready pods
    counted as zero on a scale-up; no change within the tolerance or when the missing
    and unready pods would turn the direction round."""
    if not pods:
        raise MetricsUnavailableError("no pods returned by selector while calculating replicas")
    groups = group_pods(pods, cpu=cpu)
    excluded = groups.ignored | groups.unready
    metrics = {p.name: p.value for p in pods if p.value is not None and p.name not in excluded}
    if not metrics:
        raise MetricsUnavailableError("did not receive metrics for any ready pods")
    usage = sum(metrics.values()) / len(metrics)
    usage_ratio = usage / target

    scale_up_with_unready = bool(groups.unready) and usage_ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if abs(1.0 - usage_ratio) <= tolerance:
            return ReplicaCount(current_replicas, usage)
        return ReplicaCount(math.ceil(usage_ratio * groups.ready_count), usage)

    filled: dict[str, float] = {k: v for k, v in metrics.items() if v is not None}
    if groups.missing:
        if usage_ratio < 1.0:
            filled.update(dict.fromkeys(groups.missing, target))
        elif usage_ratio > 1.0:
            filled.update(dict.fromkeys(groups.missing, 0.0))
    if scale_up_with_unready:
        filled.update(dict.fromkeys(groups.unready, 0.0))

    new_ratio = (sum(filled.values()) / len(filled)) / target
    if (
        abs(1.0 - new_ratio) <= tolerance
        or (usage_ratio < 1.0 < new_ratio)
        or (usage_ratio > 1.0 > new_ratio)
    ):
        return ReplicaCount(current_replicas, usage)
    new_replicas = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
        new_ratio > 1.0 and new_replicas < current_replicas
    ):
        return ReplicaCount(current_replicas, usage)
    return ReplicaCount(new_replicas, usage)


# -- behavior -----------------------------------------------------------------------


class PolicyType(enum.StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(enum.StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


@dataclass(frozen=True)
class ScalingPolicy:
    type: PolicyType
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window_seconds: int
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = SelectPolicy.MAX


# The autoscaling/v2 defaults (SetDefaults_HorizontalPodAutoscalerBehavior).
DEFAULT_SCALE_UP = ScalingRules(
    0,
    (ScalingPolicy(PolicyType.PERCENT, 100, 15), ScalingPolicy(PolicyType.PODS, 4, 15)),
)
DEFAULT_SCALE_DOWN = ScalingRules(300, (ScalingPolicy(PolicyType.PERCENT, 100, 15),))


@dataclass(frozen=True)
class ScaleEvent:
    time: float
    change: int  # replicas added (scale-up events) or removed (scale-down events)


def _change_in_period(period_seconds: int, events: Sequence[ScaleEvent], now: float) -> int:
    cutoff = now - period_seconds
    return sum(e.change for e in events if e.time > cutoff)


def scale_up_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """`calculateScaleUpLimitWithScalingRules`."""
    if rules.select_policy == SelectPolicy.DISABLED:
        return current
    proposals = []
    for policy in rules.policies:
        start = (
            current
            - _change_in_period(policy.period_seconds, up_events, now)
            + _change_in_period(policy.period_seconds, down_events, now)
        )
        if policy.type == PolicyType.PODS:
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    if not proposals:
        return current
    return min(proposals) if rules.select_policy == SelectPolicy.MIN else max(proposals)


def scale_down_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """`calculateScaleDownLimitWithBehaviors`."""
    if rules.select_policy == SelectPolicy.DISABLED:
        return current
    proposals = []
    for policy in rules.policies:
        start = (
            current
            - _change_in_period(policy.period_seconds, up_events, now)
            + _change_in_period(policy.period_seconds, down_events, now)
        )
        if policy.type == PolicyType.PODS:
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    if not proposals:
        return current
    # For scaling down the "Min" policy (smallest change) is the largest count.
    return max(proposals) if rules.select_policy == SelectPolicy.MIN else min(proposals)


@dataclass
class HpaDecision:
    current: int
    desired: int
    reason: str  # upstream's ScalingLimited / AbleToScale reasons
    figures: dict[str, float] = field(default_factory=dict)


@dataclass
class HorizontalPodAutoscaler:
    """One HPA object's controller state: the recommendations and scale events it keeps."""

    min_replicas: int
    max_replicas: int
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN
    tolerance: float = DEFAULT_TOLERANCE
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[ScaleEvent] = field(default_factory=list)
    down_events: list[ScaleEvent] = field(default_factory=list)

    def stabilize(self, now: float, current: int, desired: int) -> tuple[int, str]:
        """`stabilizeRecommendationWithBehaviors`: up to the lowest recommendation of the
        scale-up window, down to the highest of the scale-down window."""
        up_cutoff = now - self.scale_up.stabilization_window_seconds
        down_cutoff = now - self.scale_down.stabilization_window_seconds
        up_rec = desired
        down_rec = desired
        reuse = None
        for i, (t, rec) in enumerate(self.recommendations):
            if t > up_cutoff:
                up_rec = min(up_rec, rec)
            if t > down_cutoff:
                down_rec = max(down_rec, rec)
            if t < up_cutoff and t < down_cutoff:
                reuse = i
        recommendation = max(current, up_rec)
        recommendation = min(recommendation, down_rec)
        if reuse is not None:
            self.recommendations[reuse] = (now, desired)
        else:
            self.recommendations.append((now, desired))
        reason = "ScaleUpStabilized" if desired >= current else "ScaleDownStabilized"
        return recommendation, reason

    def limit_rate(self, now: float, current: int, desired: int) -> tuple[int, str]:
        """`convertDesiredReplicasWithBehaviorRate`."""
        if desired > current:
            limit = max(
                current,
                scale_up_limit(current, self.up_events, self.down_events, self.scale_up, now),
            )
            if self.max_replicas > limit:
                allowed, reason = limit, "ScaleUpLimit"
            else:
                allowed, reason = self.max_replicas, "TooManyReplicas"
            if desired > allowed:
                return allowed, reason
        elif desired < current:
            limit = min(
                current,
                scale_down_limit(current, self.up_events, self.down_events, self.scale_down, now),
            )
            if self.min_replicas < limit:
                allowed, reason = limit, "ScaleDownLimit"
            else:
                allowed, reason = self.min_replicas, "TooFewReplicas"
            if desired < allowed:
                return allowed, reason
        return desired, "DesiredWithinRange"

    def normalize(self, now: float, current: int, prenormalized: int) -> tuple[int, str]:
        """`normalizeDesiredReplicasWithBehaviors`: stabilize, then limit the rate."""
        stabilized, _ = self.stabilize(now, current, prenormalized)
        return self.limit_rate(now, current, stabilized)

    def record_scale(self, now: float, old: int, new: int) -> None:
        """`storeScaleEvent`: forget events older than the longest policy period."""
        longest_up = max((p.period_seconds for p in self.scale_up.policies), default=0)
        longest_down = max((p.period_seconds for p in self.scale_down.policies), default=0)
        self.up_events = [e for e in self.up_events if e.time > now - longest_up]
        self.down_events = [e for e in self.down_events if e.time > now - longest_down]
        if new > old:
            self.up_events.append(ScaleEvent(now, new - old))
        elif new < old:
            self.down_events.append(ScaleEvent(now, old - new))

    def decide(
        self, now: float, current: int, metrics: Sequence[tuple[Sequence[HpaPod], float]]
    ) -> HpaDecision:
        """One reconcile: the largest proposal over the metrics, normalized.

        `metrics` holds (pods with values, per-pod target) per metric. When no metric
        can be computed the HPA keeps the current count (ScalingActive=False); when some
        fail and the others would scale down, it does not scale down either.
        """
        proposals: list[int] = []
        failed = 0
        figures: dict[str, float] = {}
        for i, (pods, target) in enumerate(metrics):
            try:
                count = calc_plain_metric_replicas(current, pods, target, tolerance=self.tolerance)
            except MetricsUnavailableError:
                failed += 1
                continue
            proposals.append(count.replicas)
            figures[f"metric{i}"] = count.usage
        if not proposals:
            return HpaDecision(current, current, "FailedGetMetrics", figures)
        proposed = max(proposals)
        if failed and proposed < current:
            return HpaDecision(current, current, "InvalidMetricsNoScaleDown", figures)
        desired, reason = self.normalize(now, current, proposed)
        if desired != current:
            self.record_scale(now, current, desired)
        figures["proposed"] = proposed
        return HpaDecision(current, desired, reason, figures)
