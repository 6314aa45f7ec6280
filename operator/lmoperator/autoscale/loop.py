"""An LMService's autoscaler in the operator: the pure glue around `policy`.

What it promises:

- Inputs from what the operator already has: the server pods (phase, readiness and its
  time, creation time, deletion) and the follow_servers loop's last scrape of each pod
  (its load gauges, and when they were read); a pod whose scrape failed or did not
  parse has no report, which the policy never reads as zero load.
- One writer of `spec.replicas` within min/max, like the HPA: the decision is written
  to the LMService's own `spec.replicas` (through its scale subresource), so `kubectl
  get` and the Deployment agree. A change of `spec.replicas` that this operator did not
  write (`kubectl scale`, an edit) is recorded as a manual decision and the next
  automatic decision may override it.
- Every decision is explainable: a decision that differs from the last recorded one
  (another target or another reason) and every scale go into `status.scalingHistory`
  (the last MAX_SCALING_HISTORY); repeated holds are not written again, so a steady
  service costs no status writes. Each scale is an Event; `ScalingActive` is False, with
  the reason, while the loop cannot see (no ready pod, no or too few fresh reports).
- The policy's state (windows, last decisions, measured pod start-up time, the
  forecaster's history) lives in memory, per service: an operator that restarts or
  fails over starts it afresh and holds until its windows fill again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lmoperator.api.service import ServiceAutoscaling
from lmoperator.autoscale.policy import (
    BLIND_REASONS,
    Decision,
    PodReport,
    PolicyConfig,
    ServiceAutoscaler,
    Signal,
)
from lmoperator.server_metrics import ServerLoad

# The reasons of the condition ScalingActive: False with the policy's blind reasons, or
# with InvalidPolicy / AutoscalingDisabled; True with MetricsAvailable.
REASON_TOO_FEW_REPORTS = "TooFewReports"
REASON_NO_METRICS = "NoMetrics"
REASON_NO_READY_PODS = "NoReadyPods"
REASON_METRICS_AVAILABLE = "MetricsAvailable"
REASON_INVALID_POLICY = "InvalidPolicy"
REASON_AUTOSCALING_OFF = "AutoscalingDisabled"
EVENT_AUTOSCALED = "Autoscaled"
EVENT_MANUAL = "ManualScale"
EVENT_BLIND = "AutoscalerBlind"

MAX_REASON_CHARS = 1024


def signal_values(load: ServerLoad) -> dict[Signal, float]:
    """The autoscaler's signals in one server's load gauges (absent when not exposed)."""
    values: dict[Signal, float] = {}
    if load.in_flight is not None:
        values[Signal.IN_FLIGHT_REQUESTS] = float(load.in_flight)
    if load.waiting is not None:
        values[Signal.QUEUE_DEPTH] = load.waiting
    if load.kv_cache_usage is not None:
        values[Signal.KV_CACHE_USAGE] = load.kv_cache_usage
    return values


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(value: Any) -> float | None:
    """A Kubernetes timestamp as seconds since the epoch (None: absent or malformed)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _ready_since(status: Mapping[str, Any]) -> float | None:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True":
            return _seconds(c.get("lastTransitionTime"))
    return None


def pod_reports(
    pods: Sequence[Mapping[str, Any]],
    loads: Mapping[str, ServerLoad],
    scraped_at: float | None,
) -> list[PodReport]:
    """The policy's view of the server pods: the facts from their bodies, the metrics
    from the last scrape (`scraped_at`, seconds since the epoch; None: never scraped)."""
    reports = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        name = str(meta.get("name") or "")
        ready_at = _ready_since(status)
        created = _seconds(meta.get("creationTimestamp"))
        load = loads.get(name)
        values = signal_values(load) if load is not None else {}
        reports.append(
            PodReport(
                name=name,
                phase=str(status.get("phase") or "Pending"),
                ready=ready_at is not None,
                created_at=created if created is not None else (ready_at or 0.0),
                ready_at=ready_at,
                deleting=bool(meta.get("deletionTimestamp")),
                scraped_at=scraped_at if values else None,
                values=values,
            )
        )
    return reports


def spec_key(autoscaling: ServiceAutoscaling) -> str:
    return json.dumps(autoscaling.model_dump(mode="json", by_alias=True), sort_keys=True)


@dataclass
class AutoscalerState:
    """One service's autoscaler between passes (in memory; lost on restart)."""

    key: str
    autoscaler: ServiceAutoscaler | None
    problem: str = ""  # why no autoscaler could be built from the spec
    # The spec.replicas this operator last wrote or accepted, and the generation the
    # object had after the write: a body of a lower generation predates it.
    written_replicas: int | None = None
    written_generation: int = 0
    recorded: tuple[int, str] | None = None  # (to, reason) of the last history entry
    wrote_last: bool = False  # written_* come from this operator's write, not a reading
    manual: list[dict[str, Any]] = field(default_factory=list)


def autoscaler_state(
    previous: AutoscalerState | None, autoscaling: ServiceAutoscaling, scrape_interval: float
) -> AutoscalerState:
    """The state for this spec: kept while `spec.autoscaling` is unchanged, else a new
    policy (its windows start empty) that keeps what was written and recorded."""
    key = spec_key(autoscaling)
    if previous is not None and previous.key == key:
        return previous
    try:
        config = PolicyConfig.from_spec(autoscaling, scrape_interval_seconds=scrape_interval)
        state = AutoscalerState(key, ServiceAutoscaler(config))
    except ValueError as exc:
        state = AutoscalerState(key, None, str(exc))
    if previous is not None:
        state.written_replicas = previous.written_replicas
        state.written_generation = previous.written_generation
        state.wrote_last = previous.wrote_last
        state.recorded = previous.recorded
    return state


def effective_replicas(state: AutoscalerState | None, spec_replicas: int, generation: int) -> int:
    """spec.replicas as this operator last wrote it when the body read predates the
    write (the watch lags), so a pass on an old body never undoes a decision."""
    if (
        state is not None
        and state.written_replicas is not None
        and generation < state.written_generation
    ):
        return state.written_replicas
    return spec_replicas


def own_write(state: AutoscalerState | None, spec_replicas: int, generation: int) -> bool:
    """Whether this generation is the one this operator's last write of spec.replicas
    made (the spec changed in nothing else, unless someone wrote at the same moment)."""
    return (
        state is not None
        and state.written_generation == generation
        and state.written_replicas == spec_replicas
        and state.wrote_last
    )


def notice_manual(
    state: AutoscalerState, spec_replicas: int, generation: int, now: datetime
) -> dict[str, Any] | None:
    """A history entry when spec.replicas changed without this operator writing it."""
    if generation < state.written_generation:
        return None
    previous = state.written_replicas
    if generation > state.written_generation:
        state.wrote_last = False
    state.written_replicas = spec_replicas
    state.written_generation = generation
    if previous is None or previous == spec_replicas:
        return None
    state.recorded = (spec_replicas, "Manual")
    return {
        "time": rfc3339(now),
        "from": previous,
        "to": spec_replicas,
        "reason": f"Manual: spec.replicas {previous} -> {spec_replicas}; the autoscaler "
        "owns spec.replicas and its next decision may change it",
    }


@dataclass(frozen=True)
class Outcome:
    """What one autoscaling pass decided and what to write."""

    decision: Decision | None  # None when the spec's policy is invalid
    entries: list[dict[str, Any]]  # new status.scalingHistory entries, oldest first
    active: bool  # ScalingActive
    condition_message: str

    @property
    def condition_reason(self) -> str:
        if self.active:
            return REASON_METRICS_AVAILABLE
        if self.decision is None:
            return REASON_INVALID_POLICY
        return self.decision.reason.value  # one of BLIND_REASONS

    @property
    def scale_to(self) -> int | None:
        d = self.decision
        return d.desired if d is not None and d.desired != d.current else None


def decide(
    state: AutoscalerState,
    spec_replicas: int,
    generation: int,
    pods: Sequence[PodReport],
    now: datetime,
) -> Outcome:
    """One pass of the loop: notice a manual change, run the policy, say what to record."""
    entries = []
    manual = notice_manual(state, spec_replicas, generation, now)
    if manual is not None:
        entries.append(manual)
    if state.autoscaler is None:
        message = f"spec.autoscaling cannot be used: {state.problem}"
        return Outcome(None, entries, False, message)
    current = effective_replicas(state, spec_replicas, generation)
    decision = state.autoscaler.decide(now.timestamp(), current, pods)
    key = (decision.desired, decision.reason.value)
    if decision.desired != decision.current or key != state.recorded:
        state.recorded = key
        entries.append(
            {
                "time": rfc3339(now),
                "from": decision.current,
                "to": decision.desired,
                "reason": decision.message[:MAX_REASON_CHARS],
                "metrics": {k: float(v) for k, v in decision.figures.items()},
            }
        )
    if decision.reason in BLIND_REASONS:
        return Outcome(decision, entries, False, decision.message)
    return Outcome(
        decision,
        entries,
        True,
        "The autoscaler decides from the server pods' metrics",
    )


def wrote(state: AutoscalerState, replicas: int, generation: int) -> None:
    """This operator wrote spec.replicas; `generation` is the object's after the write."""
    state.written_replicas = replicas
    state.written_generation = generation
    state.wrote_last = True
