"""Our LMTrainingJob autoscaler: learn the job's scaling curve, then grow while it pays.

The curve: throughput(n) = n * t1 / (1 + alpha * (n - 1)) (t1: tokens/s of one worker;
alpha: the share of each added worker lost to communication and synchronisation, 0 for
perfectly linear scaling). Rearranged, n / throughput = 1/t1 + (alpha/t1) * (n - 1) is
a straight line in n, so a least-squares line through the measured (world size,
tokens/s) points gives t1 and alpha.

Marginal efficiency of going from n to n + 1 workers: (throughput(n+1) - throughput(n))
/ t1, the added throughput as a fraction of what one more worker would add on perfectly
linear scaling. The best size is the largest n within min/max reached from the minimum
through steps that each keep the marginal efficiency at or above `minEfficiency`.

Policies:
- Throughput: step one worker at a time towards the best size, no sooner than
  `cooldownSeconds` after the last rescale.
- Goodput: tokens trained per second of wall time, with the rescale downtime the job
  itself measured (seconds without training around a rescale) counted as zero. A step
  from n to m is taken only if, over the cooldown that follows it, the new size trains
  more tokens despite the downtime: throughput(m) * (H - D) >= throughput(n) * H, with H
  the cooldown and D the measured downtime. A job whose rescales cost more than they
  bring stays where it is.

With a single world size measured the curve is unknown; the autoscaler then takes one
step up (within max and the cooldown) to measure a second point, and says so.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from lmoperator.api.trainingjob import AutoscalingPolicy, TrainingAutoscaling


class TrainingReason(enum.StrEnum):
    DISABLED = "AutoscalingDisabled"
    NO_MEASUREMENTS = "NoMeasurements"
    EXPLORING = "ExploringScalingCurve"
    GROW_WHILE_EFFICIENT = "GrowWhileEfficient"
    SHRINK_BELOW_EFFICIENCY = "ShrinkBelowEfficiency"
    AT_BEST_SIZE = "AtBestSize"
    COOLDOWN = "Cooldown"
    RESCALE_NOT_WORTH_IT = "RescaleNotWorthIt"
    BELOW_MINIMUM = "BelowMinimum"
    ABOVE_MAXIMUM = "AboveMaximum"
    # Reasons of the loop around decide_training (autoscale/jobloop.py).
    NO_READY_PODS = "NoReadyPods"
    TOO_FEW_REPORTS = "TooFewReports"
    NO_METRICS = "NoMetrics"
    RESCALE_IN_PROGRESS = "RescaleInProgress"
    PENDING_TIMEOUT = "PendingTimeout"
    CAPACITY_BACKOFF = "CapacityBackoff"


@dataclass(frozen=True)
class ThroughputObservation:
    world_size: int
    tokens_per_second: float


@dataclass(frozen=True)
class ScalingCurve:
    t1: float
    alpha: float

    def throughput(self, n: int) -> float:
        return n * self.t1 / (1 + self.alpha * (n - 1))

    def marginal_efficiency(self, n: int) -> float:
        """Added tokens/s of the (n+1)-th worker as a fraction of t1."""
        return (self.throughput(n + 1) - self.throughput(n)) / self.t1


def fit_curve(observations: Sequence[ThroughputObservation]) -> ScalingCurve | None:
    """The least-squares curve through the per-size mean throughputs; None with fewer
    than two distinct world sizes (alpha cannot be told from one point)."""
    by_size: dict[int, list[float]] = defaultdict(list)
    for o in observations:
        if o.world_size >= 1 and o.tokens_per_second > 0 and math.isfinite(o.tokens_per_second):
            by_size[o.world_size].append(o.tokens_per_second)
    if len(by_size) < 2:
        return None
    xs = [float(n - 1) for n in by_size]
    zs = [n / (sum(v) / len(v)) for n, v in by_size.items()]
    mean_x = sum(xs) / len(xs)
    mean_z = sum(zs) / len(zs)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (z - mean_z) for x, z in zip(xs, zs, strict=True)) / sxx
    intercept = mean_z - slope * mean_x
    if intercept <= 0:
        # Throughput falls so steeply that one worker would do better than any line
        # through the points says; model it as one worker's throughput at the smallest
        # size measured with alpha = 1 (no gain from adding workers).
        n0 = min(by_size)
        t0 = sum(by_size[n0]) / len(by_size[n0])
        return ScalingCurve(t1=t0, alpha=1.0)
    t1 = 1 / intercept
    alpha = max(0.0, slope * t1)  # superlinear noise is read as linear scaling
    return ScalingCurve(t1=t1, alpha=alpha)


def best_size(curve: ScalingCurve, lo: int, hi: int, min_efficiency: float) -> int:
    """The largest size reached from `lo` by steps that each stay efficient enough."""
    n = lo
    while n < hi and curve.marginal_efficiency(n) >= min_efficiency:
        n += 1
    return n


@dataclass(frozen=True)
class TrainingDecision:
    time: float
    current: int
    desired: int
    reason: TrainingReason
    message: str
    figures: dict[str, float]

    @property
    def direction(self) -> str:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "hold"


def decide_training(
    now: float,
    current: int,
    spec: TrainingAutoscaling,
    *,
    min_workers: int,
    max_workers: int,
    observations: Sequence[ThroughputObservation],
    last_rescale_at: float | None,
    rescale_downtime_seconds: float | None,
) -> TrainingDecision:
    """One pass: at most one worker more or fewer than `current`."""
    figures: dict[str, float] = {"minEfficiency": spec.min_efficiency}

    def hold(reason: TrainingReason, message: str) -> TrainingDecision:
        return TrainingDecision(now, current, current, reason, message, figures)

    def move(to: int, reason: TrainingReason, message: str) -> TrainingDecision:
        return TrainingDecision(now, current, to, reason, message, figures)

    if spec.policy == AutoscalingPolicy.NONE:
        return hold(TrainingReason.DISABLED, "autoscaling.policy is None: people scale")
    if current < min_workers:
        return move(min_workers, TrainingReason.BELOW_MINIMUM, "below the minimum size")
    if current > max_workers:
        return move(max_workers, TrainingReason.ABOVE_MAXIMUM, "above the maximum size")
    if last_rescale_at is not None:
        since = now - last_rescale_at
        figures["secondsSinceRescale"] = round(since, 1)
        if since < spec.cooldown_seconds:
            return hold(
                TrainingReason.COOLDOWN,
                f"last rescale {since:.0f} s ago; cooldown is {spec.cooldown_seconds} s",
            )
    if not observations:
        return hold(TrainingReason.NO_MEASUREMENTS, "no tokens/s measured yet")

    curve = fit_curve(observations)
    if curve is None:
        if current < max_workers:
            return move(
                current + 1,
                TrainingReason.EXPLORING,
                f"only world size {observations[0].world_size} measured; one step up "
                "measures a second point of the scaling curve",
            )
        return hold(TrainingReason.AT_BEST_SIZE, "one size measured and already at maximum")
    figures["t1"] = round(curve.t1, 3)
    figures["alpha"] = round(curve.alpha, 5)
    target = best_size(curve, min_workers, max_workers, spec.min_efficiency)
    figures["bestSize"] = target
    figures["marginalEfficiency"] = round(curve.marginal_efficiency(current), 4)
    if target == current:
        return hold(
            TrainingReason.AT_BEST_SIZE,
            f"{current} workers: the next one would add "
            f"{curve.marginal_efficiency(current):.0%} of a worker (< {spec.min_efficiency:.0%})"
            if current < max_workers
            else f"{current} workers: at the maximum",
        )
    step = current + 1 if target > current else current - 1
    reason = (
        TrainingReason.GROW_WHILE_EFFICIENT if step > current
        else TrainingReason.SHRINK_BELOW_EFFICIENCY
    )  # fmt: skip
    if spec.policy == AutoscalingPolicy.GOODPUT:
        downtime = rescale_downtime_seconds if rescale_downtime_seconds is not None else 0.0
        horizon = float(max(spec.cooldown_seconds, spec.interval_seconds))
        now_rate = curve.throughput(current)
        new_rate = curve.throughput(step)
        stay = now_rate * horizon
        go = new_rate * max(0.0, horizon - downtime)
        figures["rescaleDowntimeSeconds"] = downtime
        figures["tokensIfStay"] = round(stay, 1)
        figures["tokensIfRescale"] = round(go, 1)
        if go < stay:
            return hold(
                TrainingReason.RESCALE_NOT_WORTH_IT,
                f"{current} -> {step} workers would train {go:.0f} tokens over the next "
                f"{horizon:.0f} s against {stay:.0f} staying, after {downtime:.0f} s of "
                "rescale downtime",
            )
    return move(
        step,
        reason,
        f"{current} -> {step} workers towards {target} (throughput {curve.throughput(step):.1f} "
        f"tokens/s predicted)",
    )
