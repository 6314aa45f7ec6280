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
- The metrics come from the service's source (`sources`): a metric the source could not
  read is missing, never zero, and the source's problems are named in `ScalingActive`'s
  message, in a `MetricUnavailable` Event when one appears, and counted by the handler.
- The policy's state (windows, last decisions, measured pod start-up time) lives in
  memory, per service; the load history (`history`) is also kept in a ConfigMap the
  service owns, written when a minute closes and loaded by an operator that restarts or
  takes over, which seeds the forecaster from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lmoperator.api.service import ServiceAutoscaling
from lmoperator.autoscale.history import MetricHistory
from lmoperator.autoscale.policy import (
    BLIND_REASONS,
    DEMAND_SIGNALS,
    Decision,
    PodReport,
    PolicyConfig,
    ServiceAutoscaler,
    Signal,
)
from lmoperator.autoscale.sources import Problem
from lmoperator.autoscale.sources.pods import PodsSource

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
EVENT_METRIC_UNAVAILABLE = "MetricUnavailable"
EVENT_HISTORY_UNAVAILABLE = "HistoryUnavailable"

MAX_REASON_CHARS = 1024


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    manual: list[dict[str, Any]] = field(default_factory=list)
    # Source Pods: each pod's previous scrape, for the rates between two scrapes.
    pods_source: PodsSource = field(default_factory=PodsSource)
    # The (metric, kind) of the problems of the last pass: a new one is an Event.
    problem_keys: frozenset[tuple[str, str]] = frozenset()
    # The metric history (None: not loaded from its ConfigMap yet), the newest bucket
    # written to it, and a problem reading or writing it to say once.
    history: MetricHistory | None = None
    history_written: int | None = None
    history_problem: str = ""


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
        state.recorded = previous.recorded
        state.pods_source = previous.pods_source
        state.problem_keys = previous.problem_keys
        state.history = previous.history
        state.history_written = previous.history_written
    return state


def seed_forecaster(state: AutoscalerState, now: datetime) -> None:
    """Give the policy's forecaster the history's closed buckets (after a load from the
    ConfigMap, or when a new spec starts a new policy)."""
    if state.autoscaler is None or state.history is None:
        return
    for signal in list(state.autoscaler.history):
        state.autoscaler.load_history(signal, state.history.series(signal.value, now.timestamp()))


def history_loaded(state: AutoscalerState, history: MetricHistory, now: datetime) -> None:
    """The history read from the ConfigMap (empty when there is none)."""
    state.history = history
    state.history_written = history.closed_through(now.timestamp())
    seed_forecaster(state, now)


def history_to_write(state: AutoscalerState, now: datetime) -> dict[str, str] | None:
    """The ConfigMap's data when a bucket closed since the last write (at most one write
    a minute), else None."""
    if state.history is None:
        return None
    closed = state.history.closed_through(now.timestamp())
    if closed is None or closed == state.history_written:
        return None
    return state.history.to_data(now.timestamp())


def history_written(state: AutoscalerState, now: datetime) -> None:
    if state.history is not None:
        state.history_written = state.history.closed_through(now.timestamp())


def fleet_values(pods: Sequence[PodReport]) -> dict[str, float]:
    """Each signal's fleet value in this pass's reports: the total over the ready pods
    that reported it (demand) or their average (quality); absent: nobody reported it."""
    values: dict[Signal, list[float]] = {}
    for pod in pods:
        if pod.ready and not pod.deleting and pod.scraped_at is not None:
            for signal, value in pod.values.items():
                values.setdefault(signal, []).append(value)
    return {
        signal.value: sum(vs) if signal in DEMAND_SIGNALS else sum(vs) / len(vs)
        for signal, vs in values.items()
    }


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


def notice_manual(
    state: AutoscalerState, spec_replicas: int, generation: int, now: datetime
) -> dict[str, Any] | None:
    """A history entry when spec.replicas changed without this operator writing it."""
    if generation < state.written_generation:
        return None
    previous = state.written_replicas
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
    # What the source could not read this pass, and which of those are new since the last.
    problems: tuple[Problem, ...] = ()
    new_problems: tuple[Problem, ...] = ()
    history_problem: str = ""  # reading or writing the history ConfigMap failed

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


def _problem_key(problem: Problem) -> tuple[str, str]:
    return str(problem.signal or "*"), problem.kind.value


def decide(
    state: AutoscalerState,
    spec_replicas: int,
    generation: int,
    pods: Sequence[PodReport],
    now: datetime,
    problems: Sequence[Problem] = (),
    source: str = "Pods",
) -> Outcome:
    """One pass of the loop: notice a manual change, run the policy, say what to record.

    `problems`: what the metric source (`source`) could not read; they do not change
    the decision (the policy already sees those metrics as missing) but explain it."""
    entries = []
    keys = frozenset(_problem_key(p) for p in problems)
    # One of each new (metric, kind): three unreachable pods are one new problem.
    first = {_problem_key(p): p for p in reversed(problems)}
    new = tuple(p for key, p in sorted(first.items()) if key not in state.problem_keys)
    state.problem_keys = keys
    said = "; ".join(p.message for p in problems[:3]) + (
        f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    )
    manual = notice_manual(state, spec_replicas, generation, now)
    if manual is not None:
        entries.append(manual)
    if state.autoscaler is None:
        message = f"spec.autoscaling cannot be used: {state.problem}"
        return Outcome(None, entries, False, message, tuple(problems), new)
    current = effective_replicas(state, spec_replicas, generation)
    decision = state.autoscaler.decide(now.timestamp(), current, pods)
    if state.history is not None:
        state.history.observe(now.timestamp(), decision.desired, fleet_values(pods))
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
        message = f"{decision.message}: {said}" if said else decision.message
        return Outcome(decision, entries, False, message, tuple(problems), new)
    message = (
        "The autoscaler decides from the server pods' metrics"
        if source == "Pods"
        else f"The autoscaler decides from {source}'s answers"
    )
    if said:
        message += f"; missing, and left out of the decision: {said}"
    return Outcome(decision, entries, True, message, tuple(problems), new)


def wrote(state: AutoscalerState, replicas: int, generation: int) -> None:
    """This operator wrote spec.replicas; `generation` is the object's after the write."""
    state.written_replicas = replicas
    state.written_generation = generation
