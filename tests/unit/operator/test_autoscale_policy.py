"""Our LMService policy: its mechanics on hand-computed cases, then one test per failure
that users report of the autoscalers people run today (issue "Known failures of the
peers"), each named after the failure and showing ours does not do it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import replace

import pytest

from lmoperator.api.service import ServiceAutoscaling
from lmoperator.autoscale import hpa
from lmoperator.autoscale.forecast import HoltWinters
from lmoperator.autoscale.policy import (
    Decision,
    MetricTarget,
    PodReport,
    PolicyConfig,
    PredictiveConfig,
    Reason,
    ServiceAutoscaler,
    Signal,
)
from lmoperator.autoscale.schedule import InvalidScheduleError, Schedule, active_floor

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
IN_FLIGHT = Signal.IN_FLIGHT_REQUESTS


def config(**kw: object) -> PolicyConfig:
    base: dict[str, object] = {
        "min_replicas": 1,
        "max_replicas": 50,
        "metrics": (MetricTarget(IN_FLIGHT, 4.0),),
    }
    base.update(kw)
    return PolicyConfig(**base)  # type: ignore[arg-type]


def pod(
    i: int,
    now: float,
    values: Mapping[Signal, float] | None = None,
    *,
    ready: bool = True,
    phase: str = "Running",
    age: float = 3600.0,
    ready_for: float = 3000.0,
    scraped: bool = True,
) -> PodReport:
    return PodReport(
        name=f"p{i}",
        phase=phase,
        ready=ready,
        created_at=now - age,
        ready_at=now - ready_for if ready else None,
        scraped_at=now - 1 if scraped and values is not None else None,
        values=dict(values or {}),
    )


def fleet(n: int, now: float, total: float, signal: Signal = IN_FLIGHT) -> list[PodReport]:
    return [pod(i, now, {signal: total / n}) for i in range(n)]


# -- mechanics ----------------------------------------------------------------------


def test_demand_recommendation_is_total_over_target() -> None:
    a = ServiceAutoscaler(config())
    d = a.decide(T0, 2, fleet(2, T0, 40.0))
    assert (d.desired, d.reason, d.signal) == (10, Reason.METRIC_ABOVE_TARGET, IN_FLIGHT)
    assert d.figures["InFlightRequests.stable"] == 40.0


def test_tolerance_holds_small_changes() -> None:
    a = ServiceAutoscaler(config())
    # 4.3 per replica against 4: within 10 %.
    d = a.decide(T0, 4, fleet(4, T0, 17.2))
    assert (d.desired, d.reason) == (4, Reason.WITHIN_TOLERANCE)


def test_scale_down_waits_for_stabilization_window() -> None:
    a = ServiceAutoscaler(config(scale_down_stabilization_seconds=60))
    assert a.decide(T0, 10, fleet(10, T0, 40.0)).desired == 10
    d = a.decide(T0 + 30, 10, fleet(10, T0 + 30, 8.0))
    assert (d.desired, d.reason) == (10, Reason.SCALE_DOWN_STABILIZED)
    # After the window the 60 s average of 8 is 2 replicas; the rate halves at most.
    d = a.decide(T0 + 95, 10, fleet(10, T0 + 95, 8.0))
    assert (d.desired, d.reason) == (5, Reason.SCALE_DOWN_LIMITED)


def test_panic_scales_up_at_once_and_never_down_while_panicking() -> None:
    a = ServiceAutoscaler(config(scale_down_stabilization_seconds=0))
    for t in range(0, 60, 5):
        a.decide(T0 + t, 2, fleet(2, T0 + t, 8.0))
    # A burst: the 6 s window (passes at 55 s and 60 s) averages 24 in flight, 6 replicas'
    # worth, 3 x the 2 that serve; the 60 s window averages 10.7 (3 replicas).
    d = a.decide(T0 + 60, 2, fleet(2, T0 + 60, 40.0))
    assert (d.desired, d.reason) == (6, Reason.PANIC_SCALE_UP)
    assert d.figures["InFlightRequests.recommended"] == 3
    d = a.decide(T0 + 65, 6, fleet(6, T0 + 65, 4.0))
    assert (d.desired, d.reason) == (6, Reason.PANIC_NO_SCALE_DOWN)
    # Panic ends a stable window after the last pass over the threshold.
    current = 6
    for t in range(70, 200, 5):
        d = a.decide(T0 + t, current, fleet(current, T0 + t, 4.0))
        current = d.desired
    assert d.figures["panic"] == 0.0
    assert current < 6


def test_scale_down_measures_a_window_at_each_size() -> None:
    """In-flight counts rise as pods go; the next step down waits for a stable window
    measured at the new size."""
    a = ServiceAutoscaler(config(scale_down_stabilization_seconds=0))
    d = a.decide(T0, 8, fleet(8, T0, 8.0))
    assert (d.desired, d.reason) == (4, Reason.SCALE_DOWN_LIMITED)
    d = a.decide(T0 + 30, 4, fleet(4, T0 + 30, 8.0))
    assert (d.desired, d.reason) == (4, Reason.SCALE_DOWN_SETTLING)
    d = a.decide(T0 + 61, 4, fleet(4, T0 + 61, 8.0))
    assert d.desired == 2


def test_rates_limit_each_step() -> None:
    a = ServiceAutoscaler(config(scale_up_max_rate=2.0))
    d = a.decide(T0, 3, fleet(3, T0, 100.0))
    assert (d.desired, d.reason) == (6, Reason.SCALE_UP_LIMITED)


def test_from_spec_maps_the_api_fields() -> None:
    spec = ServiceAutoscaling.model_validate(
        {
            "minReplicas": 2,
            "maxReplicas": 9,
            "metrics": [{"type": "QueueDepth", "target": 3}],
            "scaleDown": {"stabilizationSeconds": 120},
            "predictive": {"enabled": True, "horizonSeconds": 90},
            "schedules": [
                {"name": "office", "cron": "0 8 * * 1-5", "durationSeconds": 36000,
                 "minReplicas": 4, "timeZone": "Europe/Berlin"}
            ],
        }
    )  # fmt: skip
    cfg = PolicyConfig.from_spec(spec)
    assert cfg.metrics == (MetricTarget(Signal.QUEUE_DEPTH, 3.0),)
    assert cfg.scale_down_stabilization_seconds == 120
    assert cfg.predictive == PredictiveConfig(horizon_seconds=90)
    assert cfg.schedules[0].time_zone == "Europe/Berlin"


def test_bad_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="minReplicas"):
        config(min_replicas=5, max_replicas=2)
    with pytest.raises(InvalidScheduleError, match=r"schedules\[x\].timeZone"):
        config(schedules=(Schedule("x", "0 8 * * *", 60, 2, "Mars/Olympus"),))
    with pytest.raises(InvalidScheduleError, match="five-field"):
        config(schedules=(Schedule("x", "0 8 * *", 60, 2),))


def test_scheduled_floor_follows_its_time_zone() -> None:
    # 2024-01-15 is a Monday; 08:00 in Berlin (UTC+1 in winter) is 07:00 UTC.
    monday_0700_utc = 1705302000.0
    office = Schedule("office", "0 8 * * 1-5", 3600, 6, "Europe/Berlin")
    assert active_floor([office], monday_0700_utc - 60).replicas == 0
    assert active_floor([office], monday_0700_utc).replicas == 6
    assert active_floor([office], monday_0700_utc + 3599).schedule == "office"
    assert active_floor([office], monday_0700_utc + 3600).replicas == 0
    a = ServiceAutoscaler(config(schedules=(office,)))
    d = a.decide(monday_0700_utc + 60, 1, fleet(1, monday_0700_utc + 60, 0.0))
    assert (d.desired, d.reason) == (6, Reason.SCHEDULED_FLOOR)


def test_predictive_says_when_history_is_too_short_and_stays_reactive() -> None:
    a = ServiceAutoscaler(config(predictive=PredictiveConfig()))
    d = a.decide(T0, 2, fleet(2, T0, 8.0))
    assert d.desired == 2
    assert d.figures["predictive.neededBuckets"] == 2 * 1440
    assert "predictive.recommended" not in d.figures


def test_predictive_provisions_ahead_of_a_daily_peak_never_below_reactive() -> None:
    # Two days of 1-minute history: 8 in flight, 80 from 12:00 to 13:00 UTC each day.
    day0 = 1_704_067_200.0  # 2024-01-01 00:00 UTC

    def load(t: float) -> float:
        return 80.0 if 12 * 3600 <= t % 86400 < 13 * 3600 else 8.0

    a = ServiceAutoscaler(config(predictive=PredictiveConfig(horizon_seconds=300)))
    a.load_history(IN_FLIGHT, [(day0 + m * 60, load(day0 + m * 60)) for m in range(2 * 1440)])
    now = day0 + 2 * 86400 + 12 * 3600 - 240  # third day, 11:56
    d = a.decide(now, 2, fleet(2, now, 8.0))
    assert d.reason == Reason.PREDICTED_DEMAND
    assert d.desired >= 15  # about 80 / 4 forecast for 12:01
    # Off-peak the forecast adds nothing on top of the reactive answer.
    later = now + 3 * 3600
    d = a.decide(later, 2, fleet(2, later, 8.0))
    assert d.desired == 2


def test_holt_winters_forecasts_a_seasonal_series() -> None:
    model = HoltWinters(season_length=24)
    series = [10 + 5 * math.sin(2 * math.pi * i / 24) + 0.1 * i for i in range(24 * 4)]
    for i, v in enumerate(series):
        model.add(i, v)
    expected = 10 + 5 * math.sin(2 * math.pi * 100 / 24) + 0.1 * 100
    forecast = model.forecast(100)
    assert forecast is not None
    assert forecast == pytest.approx(expected, abs=0.5)
    assert HoltWinters(season_length=24).forecast(1) is None


# -- known failures of the peers ----------------------------------------------------


def test_empty_metrics_query_is_not_read_as_zero_load_at_peak() -> None:
    a = ServiceAutoscaler(config())
    assert a.decide(T0, 8, fleet(8, T0, 64.0)).desired == 16
    blind = [pod(i, T0 + 5, None) for i in range(16)]
    d = a.decide(T0 + 5, 16, blind)
    assert (d.desired, d.reason) == (16, Reason.NO_METRICS)
    few = [pod(i, T0 + 10, {IN_FLIGHT: 4.0}) for i in range(5)] + [
        pod(i, T0 + 10, None) for i in range(5, 16)
    ]
    d = a.decide(T0 + 10, 16, few)
    assert (d.desired, d.reason) == (16, Reason.TOO_FEW_REPORTS)
    # A pod whose text lacks the metric (unparsable) is missing, not zero: on a scale-up
    # it adds nothing, and it never turns the answer into a scale-down.
    partial = [pod(i, T0 + 15, {IN_FLIGHT: 8.0}) for i in range(12)] + [
        pod(i, T0 + 15, {}) for i in range(12, 16)
    ]
    d = ServiceAutoscaler(config()).decide(T0 + 15, 16, partial)
    assert d.desired == 24
    assert d.figures["InFlightRequests.missingPods"] == 4
    # The HPA's rule, same numbers, for comparison: the HPA port agrees on the direction.
    hpa_pods = [hpa.HpaPod(f"p{i}", 8.0 if i < 12 else None) for i in range(16)]
    assert hpa.calc_plain_metric_replicas(16, hpa_pods, 4.0).replicas == 24


def test_replicas_come_down_after_load_falls_to_zero() -> None:
    a = ServiceAutoscaler(config(scale_down_stabilization_seconds=300))
    current = a.decide(T0, 10, fleet(10, T0, 40.0)).desired
    reached_min_at = None
    for t in range(5, 1200, 5):
        d = a.decide(T0 + t, current, fleet(current, T0 + t, 0.0))
        current = d.desired
        if current == 1 and reached_min_at is None:
            reached_min_at = t
    assert current == 1
    assert reached_min_at is not None
    # The 300 s stabilization window, the 60 s stable window draining, then halving
    # (10 -> 5 -> 3 -> 2 -> 1) with a stable window at each size before the next step.
    assert reached_min_at <= 300 + 60 + 4 * 60


def test_waiting_queue_wins_over_flat_kv_cache_usage() -> None:
    cfg = config(
        metrics=(
            MetricTarget(Signal.KV_CACHE_USAGE, 0.9),
            MetricTarget(Signal.QUEUE_DEPTH, 2.0),
        )
    )
    a = ServiceAutoscaler(cfg)
    pods = [pod(i, T0, {Signal.KV_CACHE_USAGE: 0.7, Signal.QUEUE_DEPTH: 6.0}) for i in range(4)]
    d = a.decide(T0, 4, pods)
    assert d.signal == Signal.QUEUE_DEPTH
    assert (d.desired, d.reason) == (12, Reason.METRIC_ABOVE_TARGET)
    assert d.figures["KVCacheUsage.recommended"] <= 4  # the flat signal alone would hold


def test_no_scale_up_on_every_pass_without_load() -> None:
    a = ServiceAutoscaler(config(min_replicas=2))
    current = 2
    for t in range(0, 3600, 5):
        # Idle pods, and now and then a scrape that fails.
        values = None if t % 35 == 0 else {IN_FLIGHT: 0.0}
        d = a.decide(T0 + t, current, [pod(i, T0 + t, values) for i in range(current)])
        assert d.desired <= current
        current = d.desired
    assert current == 2


def test_no_thrash_when_decision_delay_is_shorter_than_lookback_window() -> None:
    """Load steps from 8 to 40 in flight; pods take 30 s to become ready and then share
    the load. Decisions every 5 s read a 60 s window. A per-pod average over that window
    (ready pods' average x current) overshoots and comes back down; totals do not."""
    a = ServiceAutoscaler(config(scale_down_stabilization_seconds=60))
    created: dict[int, float] = {0: T0 - 3600, 1: T0 - 3600}
    current, changes = 2, []
    for t in range(0, 900, 5):
        now = T0 + t
        total = 40.0 if t >= 60 else 8.0
        ready_ids = [i for i, c in created.items() if now - c >= 30]
        pods = [pod(i, now, {IN_FLIGHT: total / len(ready_ids)}, age=now - created[i],
                    ready_for=now - created[i] - 30) for i in ready_ids]  # fmt: skip
        pods += [pod(i, now, None, ready=False, age=now - c) for i, c in created.items()
                 if i not in ready_ids]  # fmt: skip
        d = a.decide(now, current, pods)
        if d.desired != current:
            changes.append(d.direction)
            for i in range(current, d.desired):
                created[i] = now
            for i in range(d.desired, current):
                created.pop(i, None)
            current = d.desired
    assert current == 10
    assert "down" not in changes
    assert len(changes) <= 3


def test_new_pods_slow_first_seconds_do_not_cause_over_scaling() -> None:
    cfg = config(metrics=(MetricTarget(Signal.LATENCY_P95, 2.0),), warmup_seconds=30)
    a = ServiceAutoscaler(cfg)
    now = T0
    pods = [pod(i, now, {Signal.LATENCY_P95: 1.9}) for i in range(4)]
    # Two pods Ready 5 s ago: their first requests are slow (caches cold).
    pods += [pod(i, now, {Signal.LATENCY_P95: 12.0}, age=60, ready_for=5) for i in (4, 5)]
    d = a.decide(now, 6, pods)
    assert d.desired <= 6
    assert d.figures["warmingPods"] == 2
    # Counted in, their latency would have asked for ceil(6 x 5.27 / 2) = 16 replicas.
    polluted = [hpa.HpaPod(p.name, p.values[Signal.LATENCY_P95]) for p in pods]
    assert hpa.calc_plain_metric_replicas(6, polluted, 2.0).replicas == 16


def test_pending_pods_are_not_capacity_and_do_not_block_scale_down() -> None:
    a = ServiceAutoscaler(config(scale_down_stabilization_seconds=0))
    ready = [pod(i, T0, {IN_FLIGHT: 10.0}) for i in range(2)]
    stuck = [pod(i, T0, None, ready=False, phase="Pending", age=900) for i in range(2, 6)]
    d = a.decide(T0, 6, ready + stuck)
    # 20 in flight need 5 replicas: 2.5 x the 2 pods that serve, so panic, although
    # 6 replicas exist on paper.
    assert d.figures["panic"] == 1.0
    assert d.figures["pendingPods"] == 4
    assert d.figures["servingPods"] == 2
    # When the load goes, the stuck pods do not hold the count up.
    b = ServiceAutoscaler(config(scale_down_stabilization_seconds=0))
    quiet = [pod(i, T0, {IN_FLIGHT: 1.0}) for i in range(2)]
    d = b.decide(T0, 6, quiet + stuck)
    assert d.desired < 6
    assert d.reason in (Reason.METRIC_BELOW_TARGET, Reason.SCALE_DOWN_LIMITED)


def test_slow_model_load_is_not_killed_or_counted_failed() -> None:
    a = ServiceAutoscaler(config())
    created = T0
    decisions: list[Decision] = []
    for t in range(0, 300, 5):
        now = T0 + t
        pods = [pod(i, now, {IN_FLIGHT: 6.0}) for i in range(2)]
        pods.append(pod(2, now, None, ready=False, age=now - created))
        decisions.append(a.decide(now, 3, pods))
    # Three minutes of loading: the count neither drops (which would delete it) nor grows
    # (which would add a replacement), and it is reported as starting.
    assert {d.desired for d in decisions} == {3}
    assert decisions[-1].figures["startingPods"] == 1
    now = T0 + 300
    pods = [pod(i, now, {IN_FLIGHT: 4.0}) for i in range(2)]
    pods.append(pod(2, now, {IN_FLIGHT: 4.0}, age=300, ready_for=0))
    a.decide(now, 3, pods)
    assert a.startup_seconds[-1] == 300


def test_two_operator_replicas_do_not_flap_between_answers() -> None:
    cfg = config(scale_down_stabilization_seconds=60)
    leader, twin, standby = ServiceAutoscaler(cfg), ServiceAutoscaler(cfg), ServiceAutoscaler(cfg)
    current = 2
    answers: list[int] = []
    for t in range(0, 600, 5):
        now = T0 + t
        total = 40.0 if 100 <= t < 300 else 6.0
        pods = fleet(current, now, total)
        d = leader.decide(now, current, pods)
        # The same inputs give the same answer, so a fail-over does not change course...
        assert twin.decide(now, current, pods) == d
        # ...and the replica that is not active never proposes a count.
        s = standby.decide(now, current, pods, active=False)
        assert (s.desired, s.reason) == (current, Reason.NOT_ACTIVE)
        answers.append(d.desired)
        current = d.desired
    directions = [b > a for a, b in itertools.pairwise(answers) if a != b]
    flips = sum(1 for x, y in itertools.pairwise(directions) if x != y)
    assert flips <= 1  # up once for the burst, down once after it


def test_config_is_frozen() -> None:
    cfg = config()
    assert replace(cfg, tolerance=0.2).tolerance == 0.2
    with pytest.raises(AttributeError):
        cfg.tolerance = 0.3  # type: ignore[misc]
