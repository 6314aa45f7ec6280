"""Our LMService autoscaler: a pure decision per pass, with its reason and figures.

What it promises (docs/autoscaling.md has the whole algorithm and every reason code):

- Demand, not per-pod averages: additive signals (in-flight and waiting requests,
  requests/s, tokens/s) are summed over the pods that report them, so the
  recommendation `ceil(total / target)` does not depend on how many pods are up, and
  samples taken before a scale-up cannot make it scale up again (the thrash of
  per-pod averages read back over a look-back window longer than the decision delay).
- Missing is never zero: a pod whose report is absent, stale (older than two scrape
  intervals) or unparsable counts as at target when scaling down and as zero when
  scaling up (the HPA's rule); fewer than half of the ready pods reporting holds the
  current size (`TooFewReports`); no report at all holds it too (`NoMetrics`).
- Capacity is what serves: Pending and not-ready pods (a model that takes minutes to
  load included) are never capacity, are never counted as failed, and never block a
  scale-down; a pod's first `warmup_seconds` after Ready are left out of the
  per-pod quality signals (latency, KV-cache usage), whose slow first seconds would
  otherwise read as a capacity shortage.
- Several signals at once: the largest recommendation wins, so a waiting queue that
  grows wins over a KV-cache-usage signal that stays flat.
- Stable and panic windows as in the KPA (no scale-down while panicking), a tolerance
  as in the HPA, scale-up and scale-down rates, stabilization windows, scheduled floors
  (cron + time zone) and a predictive term (Holt-Winters on the demand history, looking
  ahead by the measured pod start-up time) that can only add replicas.
- Only the active operator replica decides (`active=False` answers `NotActive`), and
  a decision depends only on its inputs and the state they built, so two replicas fed
  the same history give the same answer.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lmoperator.api.service import MetricType, ServiceAutoscaling
from lmoperator.autoscale import schedule as schedules
from lmoperator.autoscale.forecast import DAY_SECONDS, HoltWinters


class Signal(enum.StrEnum):
    IN_FLIGHT_REQUESTS = "InFlightRequests"
    QUEUE_DEPTH = "QueueDepth"
    REQUESTS_PER_SECOND = "RequestsPerSecond"
    TOKENS_PER_SECOND = "TokensPerSecond"
    LATENCY_P95 = "LatencyP95"
    KV_CACHE_USAGE = "KVCacheUsage"


# Additive over pods: the fleet needs total / target replicas.
DEMAND_SIGNALS = frozenset(
    {
        Signal.IN_FLIGHT_REQUESTS,
        Signal.QUEUE_DEPTH,
        Signal.REQUESTS_PER_SECOND,
        Signal.TOKENS_PER_SECOND,
    }
)
# Per-pod quality: the fleet needs serving pods x average / target.
QUALITY_SIGNALS = frozenset({Signal.LATENCY_P95, Signal.KV_CACHE_USAGE})


class Reason(enum.StrEnum):
    """Why a decision came out as it did (CamelCase, as Events and conditions want)."""

    METRIC_ABOVE_TARGET = "MetricAboveTarget"
    METRIC_BELOW_TARGET = "MetricBelowTarget"
    PANIC_SCALE_UP = "PanicScaleUp"
    PREDICTED_DEMAND = "PredictedDemand"
    SCHEDULED_FLOOR = "ScheduledFloor"
    BELOW_MINIMUM = "BelowMinimum"
    ABOVE_MAXIMUM = "AboveMaximum"
    SCALE_UP_LIMITED = "ScaleUpLimited"
    SCALE_DOWN_LIMITED = "ScaleDownLimited"
    WITHIN_TOLERANCE = "WithinTolerance"
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
    SCALE_UP_STABILIZED = "ScaleUpStabilized"
    RECENT_SCALE_UP = "RecentScaleUp"
    SCALE_DOWN_SETTLING = "ScaleDownSettling"
    PANIC_NO_SCALE_DOWN = "PanicNoScaleDown"
    TOO_FEW_REPORTS = "TooFewReports"
    NO_METRICS = "NoMetrics"
    NO_READY_PODS = "NoReadyPods"
    NOT_ACTIVE = "NotActive"


# Holds that mean the loop cannot see: ScalingActive=False when wired in.
BLIND_REASONS = frozenset({Reason.TOO_FEW_REPORTS, Reason.NO_METRICS, Reason.NO_READY_PODS})


@dataclass(frozen=True)
class MetricTarget:
    signal: Signal
    target: float


@dataclass(frozen=True)
class PredictiveConfig:
    horizon_seconds: float = 120.0  # used until pod start-up times have been measured
    bucket_seconds: float = 60.0
    season_seconds: float = DAY_SECONDS


@dataclass(frozen=True)
class PolicyConfig:
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricTarget, ...]
    stable_window_seconds: float = 60.0
    panic_window_seconds: float = 6.0
    panic_threshold: float = 2.0
    tolerance: float = 0.1
    scale_up_max_rate: float = 1000.0
    scale_up_stabilization_seconds: float = 0.0
    scale_down_max_rate: float = 2.0
    scale_down_stabilization_seconds: float = 300.0
    # A scale-down this soon after a scale-up must be a large one (the load went away),
    # not a correction that the next noise would reverse: fewer flaps.
    reversal_guard_seconds: float = 300.0
    reversal_min_drop: float = 0.5
    scrape_interval_seconds: float = 5.0
    warmup_seconds: float = 30.0
    schedules: tuple[schedules.Schedule, ...] = ()
    predictive: PredictiveConfig | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) must be at least 1 and at "
                f"most autoscaling.maxReplicas ({self.max_replicas})"
            )
        if not self.metrics:
            raise ValueError("autoscaling.metrics needs at least one metric")
        if self.panic_window_seconds > self.stable_window_seconds:
            raise ValueError("autoscaling.panicWindowSeconds must not exceed stableWindowSeconds")
        for s in self.schedules:
            schedules.validate(s)
            if s.min_replicas > self.max_replicas:
                raise ValueError(
                    f"autoscaling.schedules[{s.name}].minReplicas ({s.min_replicas}) exceeds "
                    f"autoscaling.maxReplicas ({self.max_replicas}); lower it or raise the max"
                )

    @classmethod
    def from_spec(
        cls,
        spec: ServiceAutoscaling,
        *,
        scrape_interval_seconds: float = 5.0,
        warmup_seconds: float = 30.0,
    ) -> PolicyConfig:
        """The policy an LMService's `spec.autoscaling` asks for."""
        predictive = None
        if spec.predictive is not None and spec.predictive.enabled:
            predictive = PredictiveConfig(horizon_seconds=spec.predictive.horizon_seconds)
        return cls(
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            metrics=tuple(
                MetricTarget(Signal(MetricType(m.type).value), m.target) for m in spec.metrics
            ),
            stable_window_seconds=spec.stable_window_seconds,
            panic_window_seconds=spec.panic_window_seconds,
            panic_threshold=spec.panic_threshold,
            tolerance=spec.tolerance,
            scale_up_max_rate=spec.scale_up.max_rate,
            scale_up_stabilization_seconds=spec.scale_up.stabilization_seconds,
            scale_down_max_rate=spec.scale_down.max_rate,
            scale_down_stabilization_seconds=spec.scale_down.stabilization_seconds,
            scrape_interval_seconds=scrape_interval_seconds,
            warmup_seconds=warmup_seconds,
            schedules=tuple(
                schedules.Schedule(s.name, s.cron, s.duration_seconds, s.min_replicas, s.time_zone)
                for s in spec.schedules or ()
            ),
            predictive=predictive,
        )


@dataclass(frozen=True)
class PodReport:
    """One pod as the autoscaler sees it.

    `scraped_at` is when its metrics were read (None: no report, e.g. the scrape failed
    or its text did not parse); `values` holds the signals that parsed, so a signal
    absent from it is missing for this pod, never zero.
    """

    name: str
    phase: str  # Pending, Running, Succeeded, Failed
    ready: bool
    created_at: float
    ready_at: float | None = None
    deleting: bool = False
    scraped_at: float | None = None
    values: Mapping[Signal, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    time: float
    current: int
    desired: int
    reason: Reason
    message: str
    figures: dict[str, float]
    signal: Signal | None = None  # the signal whose recommendation won, if any

    @property
    def direction(self) -> str:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "hold"


@dataclass
class _Sample:
    time: float
    value: float  # demand: the reporting pods' total; quality: their average
    missing: int  # ready pods without a fresh value
    serving: int  # ready, warmed-up pods when it was taken


@dataclass
class _Buckets:
    """Per-bucket means of one demand signal, fed to the forecaster as buckets close."""

    model: HoltWinters
    bucket_seconds: float
    index: int | None = None
    total: float = 0.0
    count: int = 0

    def add(self, now: float, value: float) -> None:
        index = math.floor(now / self.bucket_seconds)
        if self.index is not None and index != self.index and self.count:
            self.model.add(self.index, self.total / self.count)
            self.total, self.count = 0.0, 0
        self.index = index
        self.total += value
        self.count += 1


@dataclass
class ServiceAutoscaler:
    """The state one LMService's loop keeps between passes, and `decide`."""

    config: PolicyConfig
    samples: dict[Signal, deque[_Sample]] = field(default_factory=dict)
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    panic_since: float | None = None
    panic_last: float | None = None
    max_panic: int = 0
    startup_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    seen_ready: set[str] = field(default_factory=set)
    history: dict[Signal, _Buckets] = field(default_factory=dict)
    last_scale_up: float | None = None
    last_scale_down: float | None = None

    def __post_init__(self) -> None:
        p = self.config.predictive
        if p is not None:
            season = max(2, round(p.season_seconds / p.bucket_seconds))
            for m in self.config.metrics:
                if m.signal in DEMAND_SIGNALS:
                    self.history[m.signal] = _Buckets(HoltWinters(season), p.bucket_seconds)

    # -- history ----------------------------------------------------------------------

    def load_history(self, signal: Signal, buckets: Sequence[tuple[float, float]]) -> None:
        """Restore a demand signal's bucket means ((bucket start time, mean) pairs, in
        time order), e.g. from the history ConfigMap after an operator restart."""
        if signal not in self.history:
            return
        b = self.history[signal]
        for start, value in buckets:
            b.model.add(math.floor(start / b.bucket_seconds), value)

    def _record_startups(self, pods: Sequence[PodReport]) -> None:
        for pod in pods:
            if pod.ready and pod.ready_at is not None and pod.name not in self.seen_ready:
                self.seen_ready.add(pod.name)
                self.startup_seconds.append(max(0.0, pod.ready_at - pod.created_at))
        live = {p.name for p in pods}
        self.seen_ready &= live

    @property
    def measured_startup_seconds(self) -> float | None:
        """The median pod start -> Ready time seen so far (model load included)."""
        if not self.startup_seconds:
            return None
        return statistics.median(self.startup_seconds)

    # -- one pass ---------------------------------------------------------------------

    def decide(
        self, now: float, current: int, pods: Sequence[PodReport], *, active: bool = True
    ) -> Decision:
        cfg = self.config
        if not active:
            return Decision(
                now, current, current, Reason.NOT_ACTIVE,
                "another operator replica is active and decides; this one only watches",
                {},
            )  # fmt: skip

        live = [p for p in pods if not p.deleting and p.phase not in ("Failed", "Succeeded")]
        pending = [p for p in live if p.phase == "Pending"]
        starting = [p for p in live if p.phase == "Running" and not p.ready]
        ready = [p for p in live if p.phase == "Running" and p.ready]
        warming = [
            p for p in ready if p.ready_at is not None and now - p.ready_at < cfg.warmup_seconds
        ]
        serving = len(ready) - len(warming)
        fresh_limit = 2 * cfg.scrape_interval_seconds
        reporting = [
            p for p in ready if p.scraped_at is not None and now - p.scraped_at <= fresh_limit
        ]
        self._record_startups(live)
        figures: dict[str, float] = {
            "readyPods": len(ready),
            "servingPods": serving,
            "warmingPods": len(warming),
            "startingPods": len(starting),
            "pendingPods": len(pending),
            "reportingPods": len(reporting),
        }

        floor, floor_reason = self._floor(now)
        figures["floor"] = floor

        def bounded_hold(reason: Reason, message: str) -> Decision:
            # Even a blind loop keeps the bounds: below the floor or above the max moves.
            if current < floor:
                return Decision(now, current, floor, floor_reason, f"{message}; {floor_reason}",
                                figures)  # fmt: skip
            if current > cfg.max_replicas:
                return Decision(now, current, cfg.max_replicas, Reason.ABOVE_MAXIMUM,
                                f"{message}; above maxReplicas", figures)  # fmt: skip
            return Decision(now, current, current, reason, message, figures)

        if not ready:
            return bounded_hold(
                Reason.NO_READY_PODS,
                f"no ready pod to measure ({len(starting)} starting, {len(pending)} pending)",
            )
        if not reporting:
            return bounded_hold(
                Reason.NO_METRICS,
                f"none of the {len(ready)} ready pods reported fresh metrics; missing data is "
                "never read as zero load",
            )
        if len(reporting) * 2 < len(ready):
            return bounded_hold(
                Reason.TOO_FEW_REPORTS,
                f"only {len(reporting)} of {len(ready)} ready pods reported fresh metrics "
                "(at least half must)",
            )

        # Recommendations per signal.
        best = -1
        best_signal: Signal | None = None
        panic_demand = 0.0  # the panic window's demand in replicas, unrounded
        any_signal = False
        for metric in cfg.metrics:
            rec, panic_rec = self._recommend(
                now, metric, current, ready, reporting, warming, serving, figures
            )
            if rec is None:
                continue
            any_signal = True
            if rec > best:
                best, best_signal = rec, metric.signal
            panic_demand = max(panic_demand, panic_rec)
        if not any_signal:
            return bounded_hold(
                Reason.NO_METRICS,
                "the reporting pods exposed none of the configured metrics",
            )
        figures["recommended"] = best

        # Panic: the short window's demand against the capacity that serves now.
        capacity = max(1, len(ready))
        # Unrounded: with two pods, 25 in flight against 8 each is 1.6 x, not ceil()'s 2 x.
        over = panic_demand / capacity >= cfg.panic_threshold
        panic_need = math.ceil(panic_demand)
        if over:
            if self.panic_since is None:
                self.panic_since = now
            self.panic_last = now
        elif self.panic_last is not None and now - self.panic_last > cfg.stable_window_seconds:
            self.panic_since = self.panic_last = None
            self.max_panic = 0
        panicking = self.panic_since is not None
        figures["panic"] = 1.0 if panicking else 0.0
        figures["panicRecommended"] = panic_need
        reason = Reason.METRIC_ABOVE_TARGET if best > current else Reason.METRIC_BELOW_TARGET
        desired = best
        if panicking:
            if panic_need > desired:
                desired = panic_need
                reason = (
                    Reason.PANIC_SCALE_UP if panic_need > current else Reason.PANIC_NO_SCALE_DOWN
                )
            self.max_panic = max(self.max_panic, desired, current)
            if desired < self.max_panic:
                desired, reason = self.max_panic, Reason.PANIC_NO_SCALE_DOWN

        # The predictive term: only ever adds.
        predicted = self._predict(now, figures)
        if predicted is not None and predicted > desired:
            desired, reason = predicted, Reason.PREDICTED_DEMAND

        if desired == current and reason in (
            Reason.METRIC_ABOVE_TARGET,
            Reason.METRIC_BELOW_TARGET,
        ):
            reason = Reason.WITHIN_TOLERANCE

        # Floors and the maximum.
        if desired < floor:
            desired, reason = floor, floor_reason
        if desired > cfg.max_replicas:
            desired, reason = cfg.max_replicas, Reason.ABOVE_MAXIMUM

        desired, reason = self._stabilize(now, current, desired, reason, floor)
        desired, reason = self._limit_rate(current, desired, reason, floor)
        if (
            desired < current
            and self.last_scale_up is not None
            and now - self.last_scale_up < cfg.reversal_guard_seconds
            and desired > current * (1 - cfg.reversal_min_drop)
            and reason not in (Reason.ABOVE_MAXIMUM,)
        ):
            desired, reason = current, Reason.RECENT_SCALE_UP
        if (
            desired < current
            and self.last_scale_down is not None
            and now - self.last_scale_down < cfg.stable_window_seconds
            and desired >= floor
            and reason != Reason.ABOVE_MAXIMUM
        ):
            # In-flight requests per pod rise as pods go (each serves more, so more
            # slowly): measure a full stable window at the new size before going lower.
            desired, reason = current, Reason.SCALE_DOWN_SETTLING
        if desired > current:
            self.last_scale_up = now
        elif desired < current:
            self.last_scale_down = now
        if desired == current and reason in (
            Reason.METRIC_ABOVE_TARGET,
            Reason.METRIC_BELOW_TARGET,
            Reason.PREDICTED_DEMAND,
        ):
            reason = Reason.WITHIN_TOLERANCE
        message = _message(reason, current, desired, best_signal, figures)
        return Decision(now, current, desired, reason, message, figures, best_signal)

    # -- parts ------------------------------------------------------------------------

    def _floor(self, now: float) -> tuple[int, Reason]:
        floor = schedules.active_floor(self.config.schedules, now)
        if floor.replicas > self.config.min_replicas:
            return floor.replicas, Reason.SCHEDULED_FLOOR
        return self.config.min_replicas, Reason.BELOW_MINIMUM

    def _recommend(
        self,
        now: float,
        metric: MetricTarget,
        current: int,
        ready: Sequence[PodReport],
        reporting: Sequence[PodReport],
        warming: Sequence[PodReport],
        serving: int,
        figures: dict[str, float],
    ) -> tuple[int | None, float]:
        """(stable recommendation or None without data, panic-window demand in replicas)."""
        cfg = self.config
        name = metric.signal.value
        warming_names = {p.name for p in warming}
        has = [p for p in reporting if metric.signal in p.values]
        warm = [p for p in has if p.name not in warming_names]
        if not has:
            return None, 0.0
        if metric.signal in DEMAND_SIGNALS:
            # Requests held by a pod in its first seconds are real demand: they count.
            missing = max(0, len(ready) - len(has))
            value = sum(p.values[metric.signal] for p in has)
            n_values = len(has)
        else:
            if not warm:
                return None, 0.0
            missing = max(0, serving - len(warm))
            value = sum(p.values[metric.signal] for p in warm) / len(warm)
            n_values = len(warm)
        window = self.samples.setdefault(metric.signal, deque())
        window.append(_Sample(now, value, missing, serving))
        horizon = now - cfg.stable_window_seconds
        while window and window[0].time <= horizon:
            window.popleft()
        if metric.signal in QUALITY_SIGNALS:
            # A per-pod average means something only for the fleet it was measured on:
            # drop samples taken before the serving count last changed.
            while window and window[0].serving != serving:
                window.popleft()
        stable = sum(s.value for s in window) / len(window)
        panic_cut = now - cfg.panic_window_seconds
        recent = [s.value for s in window if s.time > panic_cut] or [value]
        panic = sum(recent) / len(recent)
        figures[f"{name}.stable"] = round(stable, 4)
        figures[f"{name}.target"] = metric.target
        if missing:
            figures[f"{name}.missingPods"] = missing

        if metric.signal in DEMAND_SIGNALS:
            # The HPA's rule, on totals: missing pods add nothing when scaling up and a
            # pod at target each when scaling down.
            up = math.ceil(stable / metric.target)
            down = math.ceil((stable + missing * metric.target) / metric.target)
            ratio = stable / (metric.target * max(1, current))
            panic_rec = panic / metric.target
            if up > current and abs(1 - ratio) > cfg.tolerance:
                rec = up
            elif down < current and abs(1 - ratio) > cfg.tolerance:
                rec = max(down, 1)
            else:
                rec = current
        else:
            ratio = stable / metric.target
            up_ratio = stable * n_values / (metric.target * (n_values + missing))
            down_ratio = (stable * n_values + missing * metric.target) / (
                metric.target * (n_values + missing)
            )
            base = max(1, serving)
            if ratio > 1 + cfg.tolerance and up_ratio > 1:
                rec = max(current, math.ceil(up_ratio * base))
            elif ratio < 1 - cfg.tolerance and down_ratio < 1:
                rec = min(current, max(1, math.ceil(down_ratio * base)))
            else:
                rec = current
            panic_rec = 0.0  # quality signals do not drive panic mode
        figures[f"{name}.recommended"] = rec
        return rec, panic_rec

    def _predict(self, now: float, figures: dict[str, float]) -> int | None:
        p = self.config.predictive
        if p is None:
            return None
        startup = self.measured_startup_seconds
        horizon = startup + self.config.scrape_interval_seconds if startup else p.horizon_seconds
        figures["predictive.horizonSeconds"] = round(horizon, 1)
        best: int | None = None
        for metric in self.config.metrics:
            b = self.history.get(metric.signal)
            window = self.samples.get(metric.signal)
            if b is None or not window:
                continue
            b.add(now, window[-1].value)
            if not b.model.ready:
                needed = 2 * b.model.season_length
                figures["predictive.historyBuckets"] = b.model.buckets_seen
                figures["predictive.neededBuckets"] = needed
                continue
            target_index = math.floor((now + horizon) / b.bucket_seconds)
            forecast = b.model.forecast(target_index)
            if forecast is None:
                continue
            rec = math.ceil(forecast / metric.target)
            figures[f"predictive.{metric.signal.value}"] = round(forecast, 3)
            best = rec if best is None else max(best, rec)
        if best is not None:
            figures["predictive.recommended"] = best
        return best

    def _stabilize(
        self, now: float, current: int, desired: int, reason: Reason, floor: int
    ) -> tuple[int, Reason]:
        cfg = self.config
        self.recommendations.append((now, desired))
        longest = max(cfg.scale_down_stabilization_seconds, cfg.scale_up_stabilization_seconds)
        while self.recommendations and self.recommendations[0][0] < now - longest:
            self.recommendations.popleft()
        if desired < current:
            cut = now - cfg.scale_down_stabilization_seconds
            highest = max(r for t, r in self.recommendations if t >= cut)
            highest = min(highest, current)
            if highest > desired:
                return max(highest, floor), Reason.SCALE_DOWN_STABILIZED
        elif desired > current and cfg.scale_up_stabilization_seconds > 0:
            cut = now - cfg.scale_up_stabilization_seconds
            lowest = max(min(r for t, r in self.recommendations if t >= cut), current)
            if lowest < desired and reason not in (
                Reason.SCHEDULED_FLOOR,
                Reason.BELOW_MINIMUM,
            ):
                return lowest, Reason.SCALE_UP_STABILIZED
        return desired, reason

    def _limit_rate(
        self, current: int, desired: int, reason: Reason, floor: int
    ) -> tuple[int, Reason]:
        cfg = self.config
        base = max(1, current)
        if desired > current:
            limit = max(current + 1, math.ceil(base * cfg.scale_up_max_rate))
            if desired > limit and reason not in (Reason.SCHEDULED_FLOOR, Reason.BELOW_MINIMUM):
                return limit, Reason.SCALE_UP_LIMITED
        elif desired < current:
            limit = max(floor, math.floor(base / cfg.scale_down_max_rate))
            if desired < limit and reason != Reason.ABOVE_MAXIMUM:
                return limit, Reason.SCALE_DOWN_LIMITED
        return desired, reason


def _message(
    reason: Reason, current: int, desired: int, signal: Signal | None, figures: dict[str, float]
) -> str:
    head = f"{current} -> {desired} replicas" if desired != current else f"{current} replicas"
    if signal is not None:
        stable = figures.get(f"{signal.value}.stable", 0.0)
        target = figures.get(f"{signal.value}.target")
        if signal in DEMAND_SIGNALS:
            per_replica = stable / max(1, current)
            return (
                f"{head} ({reason}): {signal.value} {stable:g} in total, {per_replica:.2f} per "
                f"replica, against a target of {target:g} per replica"
            )
        return f"{head} ({reason}): {signal.value} {stable:g} against a target of {target:g}"
    return f"{head} ({reason})"
