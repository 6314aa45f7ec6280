"""An LMTrainingJob's autoscaler in the operator: the pure glue around `training`.

What it promises (docs/autoscaling.md has the algorithm and every reason code):

- Inputs from what the operator already has: the worker pods (phase, readiness,
  creation time, deletion) and the metrics loop's last scrape of every ready worker
  (with autoscaling on, each ready worker is scraped, not only rank 0). A worker whose
  scrape failed has no report, and a report older than two scrape intervals is stale.
- Measurements, not guesses: an observation (world size, tokens/s) is the median of the
  fresh reports of a round at the job's current size, taken only once that round has
  trained WARMUP_STEPS steps (its first steps are slow and would bend the curve), and
  the rescale downtime is the workers' own `elasticlm_train_reform_seconds`.
- Holds that mean the loop cannot see (no ready worker, fewer than half of the ready
  workers reporting a fresh value, no tokens/s at all) turn ScalingActive False with
  the reason; a rescale under way (a worker not ready yet, or the round still at the old
  size) holds without deciding.
- Capacity: a worker that has stayed Pending longer than `pendingTimeoutSeconds` is not
  waited for: spec.replicas drops back to the workers before it (the reconciler then
  deletes it, as on any scale-down), and no scale-up is tried for `backoffSeconds`.
  Pending workers are never capacity, and never keep a scale-down from happening.
- One writer of spec.replicas within min/max, as for LMService (autoscale/loop.py's
  ownership rules): a change of spec.replicas this operator did not write is recorded by
  the reconciler as a manual decision, and counts as a rescale for the cooldown.
- The cooldown and the backoff are measured from the newest scale and the newest
  PendingTimeout in status.scalingHistory, so an operator that restarts keeps them; the
  observations live in memory and are measured again after a restart.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lmoperator.api.trainingjob import AutoscalingPolicy, TrainingAutoscaling
from lmoperator.autoscale.training import (
    ThroughputObservation,
    TrainingDecision,
    TrainingReason,
    decide_training,
)
from lmoperator.worker_metrics import WorkerMetrics

# Steps a round must have trained at one size before its tokens/s is an observation.
WARMUP_STEPS = 2
# Observations kept per world size (the newest): the curve follows a job that changes.
OBSERVATIONS_PER_SIZE = 20
MAX_REASON_CHARS = 1024

# ScalingActive=False reasons (the loop cannot see), and the True one.
BLIND_REASONS = frozenset(
    {TrainingReason.NO_READY_PODS, TrainingReason.TOO_FEW_REPORTS, TrainingReason.NO_METRICS}
)
REASON_MEASURING = "MeasuringThroughput"
REASON_AUTOSCALING_OFF = "AutoscalingDisabled"
EVENT_AUTOSCALED = "Autoscaled"
EVENT_BLIND = "AutoscalerBlind"
EVENT_BACKOFF = "ScaleUpBackoff"


@dataclass(frozen=True)
class WorkerReport:
    """One worker pod as the autoscaler sees it."""

    name: str
    index: int
    phase: str
    ready: bool
    deleting: bool
    created_at: float  # seconds since the epoch
    metrics: WorkerMetrics | None = None  # from the latest scrape; None: no answer
    scraped_at: float | None = None


def _seconds(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def worker_reports(
    pods: Sequence[Mapping[str, Any]],
    scrape: Mapping[str, WorkerMetrics | None],
    scraped_at: float | None,
    index_label: str,
    processes_per_pod: int = 1,
) -> list[WorkerReport]:
    """The autoscaler's view of the worker pods (`pods`: worker pod bodies; `scrape`: the
    latest metrics by pod name; `index_label`: the label holding a worker's index).

    The autoscaler counts pods; a worker reports its world size in processes, so with
    several processes per pod it is divided back into pods here."""
    reports = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        name = str(meta.get("name") or "")
        try:
            index = int((meta.get("labels") or {}).get(index_label, ""))
        except ValueError:
            continue
        ready = any(
            isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        metrics = scrape.get(name)
        if metrics is not None and metrics.world_size and processes_per_pod > 1:
            pods_in_round = metrics.world_size // processes_per_pod
            metrics = dataclasses.replace(metrics, world_size=pods_in_round)
        reports.append(
            WorkerReport(
                name=name,
                index=index,
                phase=str(status.get("phase") or "Pending"),
                ready=ready,
                deleting=bool(meta.get("deletionTimestamp")),
                created_at=_seconds(meta.get("creationTimestamp")) or 0.0,
                metrics=metrics,
                scraped_at=scraped_at if metrics is not None else None,
            )
        )
    return reports


def spec_key(autoscaling: TrainingAutoscaling, min_workers: int, max_workers: int) -> str:
    doc = autoscaling.model_dump(mode="json", by_alias=True)
    return json.dumps([doc, min_workers, max_workers], sort_keys=True)


@dataclass
class JobAutoscalerState:
    """One job's autoscaler between passes (in memory; lost on restart)."""

    observations: dict[int, deque[float]] = field(default_factory=dict)
    # The round being measured: (world size, round, the first step seen in it).
    measuring: tuple[int, int, int] | None = None
    rescale_downtime: float | None = None
    last_decided_at: float | None = None
    backoff_until: float | None = None
    recorded: tuple[int, str] | None = None  # (to, reason) of the last history entry
    # The spec.replicas this operator last wrote and the generation after the write.
    written_replicas: int | None = None
    written_generation: int = 0

    def observation_list(self) -> list[ThroughputObservation]:
        return [
            ThroughputObservation(size, tps)
            for size, values in sorted(self.observations.items())
            for tps in values
        ]


def effective_replicas(state: JobAutoscalerState, spec_replicas: int, generation: int) -> int:
    """spec.replicas as this operator last wrote it when the body read predates the
    write (the watch lags), so a pass on an old body never undoes a decision."""
    if state.written_replicas is not None and generation < state.written_generation:
        return state.written_replicas
    return spec_replicas


def wrote(state: JobAutoscalerState, replicas: int, generation: int) -> None:
    """This operator wrote spec.replicas; `generation` is the object's after the write."""
    state.written_replicas = replicas
    state.written_generation = generation


def last_backoff_time(history: Sequence[Mapping[str, Any]]) -> float | None:
    """When the newest PendingTimeout decision in status.scalingHistory was taken."""
    for entry in reversed(history):
        if str(entry.get("reason") or "").startswith(f"{TrainingReason.PENDING_TIMEOUT.value}:"):
            return _seconds(entry.get("time"))
    return None


def last_rescale_time(history: Sequence[Mapping[str, Any]]) -> float | None:
    """When the newest entry of status.scalingHistory that changed the size was taken."""
    for entry in reversed(history):
        if entry.get("from") != entry.get("to"):
            return _seconds(entry.get("time"))
    return None


@dataclass(frozen=True)
class JobOutcome:
    """What one pass of a job's autoscaler decided and what to record."""

    decision: TrainingDecision
    entry: dict[str, Any] | None  # a new status.scalingHistory entry
    active: bool  # ScalingActive
    backoff_started: bool = False

    @property
    def scale_to(self) -> int | None:
        d = self.decision
        return d.desired if d.desired != d.current else None


def _entry(decision: TrainingDecision, now: float) -> dict[str, Any]:
    return {
        "time": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "from": decision.current,
        "to": decision.desired,
        "reason": f"{decision.reason.value}: {decision.message}"[:MAX_REASON_CHARS],
        "metrics": {k: float(v) for k, v in decision.figures.items()},
    }


def _measure(state: JobAutoscalerState, current: int, fresh: Sequence[WorkerMetrics]) -> None:
    """Add an observation from the fresh reports of a warmed-up round at `current`."""
    at_size = [m for m in fresh if m.world_size == current and m.tokens_per_second]
    downtimes = [m.reform_seconds for m in fresh if m.reform_seconds is not None]
    if downtimes:
        state.rescale_downtime = max(downtimes)
    if not at_size:
        return
    rnd = max(m.round or 0 for m in at_size)
    step = max(m.step or 0 for m in at_size)
    if state.measuring is None or state.measuring[:2] != (current, rnd):
        state.measuring = (current, rnd, step)
        return
    if step - state.measuring[2] < WARMUP_STEPS:
        return
    tps = statistics.median(float(m.tokens_per_second or 0.0) for m in at_size)
    values = state.observations.setdefault(current, deque(maxlen=OBSERVATIONS_PER_SIZE))
    values.append(tps)


def decide(
    state: JobAutoscalerState,
    spec: TrainingAutoscaling,
    *,
    min_workers: int,
    max_workers: int,
    spec_replicas: int,
    generation: int,
    workers: Sequence[WorkerReport],
    history: Sequence[Mapping[str, Any]],
    now: float,
    scrape_interval: float,
) -> JobOutcome | None:
    """One pass; None when no decision is due (the interval has not passed and no
    pending worker timed out)."""
    current = effective_replicas(state, spec_replicas, generation)
    figures: dict[str, float] = {"minEfficiency": spec.min_efficiency}

    def outcome(desired: int, reason: TrainingReason, message: str) -> JobOutcome:
        decision = TrainingDecision(now, current, desired, reason, message, figures)
        state.last_decided_at = now
        key = (desired, reason.value)
        entry = None
        if desired != current or key != state.recorded:
            state.recorded = key
            entry = _entry(decision, now)
        return JobOutcome(decision, entry, reason not in BLIND_REASONS)

    if spec.policy == AutoscalingPolicy.NONE:
        return None
    live = [w for w in workers if not w.deleting and w.phase not in ("Failed", "Succeeded")]
    members = [w for w in live if w.index < current]
    pending = [w for w in members if w.phase == "Pending"]
    figures["pendingPods"] = len(pending)
    stuck = sorted(w.index for w in pending if now - w.created_at > spec.pending_timeout_seconds)
    if stuck:
        to = max(min_workers, stuck[0])
        if to < current:
            state.backoff_until = now + spec.backoff_seconds
            figures["backoffSeconds"] = spec.backoff_seconds
            result = outcome(
                to,
                TrainingReason.PENDING_TIMEOUT,
                f"worker {stuck[0]} stayed Pending longer than pendingTimeoutSeconds "
                f"({spec.pending_timeout_seconds} s): no node has room for it; back to {to} "
                f"workers, no scale-up for {spec.backoff_seconds} s",
            )
            return JobOutcome(result.decision, result.entry, result.active, backoff_started=True)

    if state.last_decided_at is not None and now - state.last_decided_at < spec.interval_seconds:
        # Measure between decisions too: the interval may be longer than a round's warm-up.
        fresh_limit = 2 * scrape_interval
        _measure(
            state,
            current,
            [
                w.metrics
                for w in live
                if w.ready and w.metrics is not None and w.scraped_at is not None
                and now - w.scraped_at <= fresh_limit
            ],
        )  # fmt: skip
        return None

    ready = [w for w in live if w.phase == "Running" and w.ready]
    fresh_limit = 2 * scrape_interval
    reporting = [
        w
        for w in ready
        if w.metrics is not None
        and w.scraped_at is not None
        and now - w.scraped_at <= fresh_limit
        and w.metrics.tokens_per_second is not None
    ]
    figures["readyPods"] = len(ready)
    figures["reportingPods"] = len(reporting)
    if not ready:
        return outcome(
            current,
            TrainingReason.NO_READY_PODS,
            f"no ready worker to measure ({len(pending)} pending)",
        )
    if not reporting:
        return outcome(
            current,
            TrainingReason.NO_METRICS,
            f"none of the {len(ready)} ready workers reported tokens/s in the last "
            f"{fresh_limit:g} s",
        )
    if len(reporting) * 2 < len(ready):
        return outcome(
            current,
            TrainingReason.TOO_FEW_REPORTS,
            f"only {len(reporting)} of {len(ready)} ready workers reported a fresh tokens/s "
            "(at least half must)",
        )
    fresh = [w.metrics for w in reporting if w.metrics is not None]
    _measure(state, current, fresh)
    if state.rescale_downtime is not None:
        figures["rescaleDowntimeSeconds"] = round(state.rescale_downtime, 3)
    sizes = {m.world_size for m in fresh}
    if len(members) < current or len(ready) < len(members) or sizes != {current}:
        return outcome(
            current,
            TrainingReason.RESCALE_IN_PROGRESS,
            f"{len(ready)} of {current} workers ready, training at world size "
            f"{'/'.join(str(s) for s in sorted(s or 0 for s in sizes))}: waiting for the "
            "rescale to finish before measuring",
        )
    if current not in state.observations:
        # Every step is measured before the next: a curve fitted without the size the
        # job runs at now would step again on the strength of the old sizes alone.
        return outcome(
            current,
            TrainingReason.NO_MEASUREMENTS,
            f"measuring tokens/s at world size {current} (after {WARMUP_STEPS} warm-up "
            "steps of its round)",
        )
    ceiling = max_workers
    backed_off_at = last_backoff_time(history)  # so that a restarted operator keeps it
    if backed_off_at is not None:
        until = backed_off_at + spec.backoff_seconds
        state.backoff_until = max(state.backoff_until or until, until)
    if state.backoff_until is not None and now < state.backoff_until:
        ceiling = max(min_workers, min(max_workers, current))
        figures["backoffRemainingSeconds"] = round(state.backoff_until - now, 1)
    decision = decide_training(
        now,
        current,
        spec,
        min_workers=min_workers,
        max_workers=ceiling,
        observations=state.observation_list(),
        last_rescale_at=last_rescale_time(history),
        rescale_downtime_seconds=state.rescale_downtime,
    )
    figures.update(decision.figures)
    reason, message = decision.reason, decision.message
    if ceiling < max_workers and reason == TrainingReason.AT_BEST_SIZE and current < max_workers:
        reason = TrainingReason.CAPACITY_BACKOFF
        message = (
            f"no scale-up for {figures['backoffRemainingSeconds']:g} s more: the last one "
            f"found no room for its pod ({decision.message})"
        )
    return outcome(decision.desired, reason, message)
