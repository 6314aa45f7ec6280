"""The LMService autoscaler's glue (autoscale/loop.py): inputs from pods and scrapes,
manual changes, what is recorded and when ScalingActive turns False."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from lmoperator.api.service import ServiceAutoscaling
from lmoperator.autoscale import loop
from lmoperator.autoscale.policy import BLIND_REASONS, PodReport, Reason, Signal
from lmoperator.autoscale.sources.pods import PodsSource
from lmoperator.server_metrics import ServerLoad

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str, *, ready_at: datetime | None = None, phase: str = "Running", deleting: bool = False
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready_at else "False"}]
    if ready_at is not None:
        conditions[0]["lastTransitionTime"] = stamp(ready_at)
    meta: dict[str, Any] = {"name": name, "creationTimestamp": stamp(T0 - timedelta(seconds=40))}
    if deleting:
        meta["deletionTimestamp"] = stamp(T0)
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions}}


def pod_reports(
    pods: list[dict[str, Any]], loads: dict[str, ServerLoad], scraped_at: float | None
) -> list[PodReport]:
    return PodsSource().read(pods, loads, scraped_at).reports


def autoscaling(**overrides: Any) -> ServiceAutoscaling:
    spec: dict[str, Any] = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [{"type": "InFlightRequests", "target": 2}],
        "stableWindowSeconds": 6,
        "panicWindowSeconds": 2,
        "scaleDown": {"stabilizationSeconds": 0},
        **overrides,
    }
    return ServiceAutoscaling.model_validate(spec)


def state_for(**overrides: Any) -> loop.AutoscalerState:
    return loop.autoscaler_state(None, autoscaling(**overrides), 5.0)


def test_pod_reports_carry_readiness_times_and_fresh_values() -> None:
    pods = [
        pod("a", ready_at=T0 - timedelta(seconds=10)),
        pod("b"),  # started, loading its model
        pod("c", phase="Pending"),
        pod("d", ready_at=T0 - timedelta(seconds=5), deleting=True),
    ]
    loads = {"a": ServerLoad(running=3, waiting=1), "b": ServerLoad()}
    reports = {r.name: r for r in pod_reports(pods, loads, T0.timestamp())}
    a = reports["a"]
    assert a.ready
    assert a.ready_at == (T0 - timedelta(seconds=10)).timestamp()
    assert a.created_at == (T0 - timedelta(seconds=40)).timestamp()
    assert a.values == {Signal.IN_FLIGHT_REQUESTS: 4.0, Signal.QUEUE_DEPTH: 1.0}
    assert a.scraped_at == T0.timestamp()
    # A pod whose scrape said nothing has no report: missing, never zero load.
    assert not reports["b"].ready
    assert reports["b"].scraped_at is None
    assert reports["c"].phase == "Pending"
    assert reports["c"].scraped_at is None
    assert reports["d"].deleting


def test_load_above_target_scales_up_and_is_recorded_with_its_figures() -> None:
    state = state_for()
    pods = pod_reports(
        [pod("a", ready_at=T0 - timedelta(seconds=60))],
        {"a": ServerLoad(running=4, waiting=2)},
        T0.timestamp(),
    )
    outcome = loop.decide(state, 1, 1, pods, T0)
    assert outcome.scale_to == 3
    assert outcome.active
    assert outcome.condition_reason == "MetricsAvailable"
    (entry,) = outcome.entries
    assert (entry["from"], entry["to"]) == (1, 3)
    assert "InFlightRequests 6 in total" in entry["reason"]
    assert entry["metrics"]["InFlightRequests.target"] == 2.0
    assert entry["time"] == "2026-01-01T12:00:00Z"


def test_repeated_holds_are_recorded_once() -> None:
    state = state_for()
    ready = [pod("a", ready_at=T0 - timedelta(seconds=60))]
    entries = []
    for second in range(5):
        now = T0 + timedelta(seconds=second)
        pods = pod_reports(ready, {"a": ServerLoad(running=2)}, now.timestamp())
        outcome = loop.decide(state, 1, 1, pods, now)
        assert outcome.scale_to is None
        entries += outcome.entries
    assert len(entries) == 1
    assert "WithinTolerance" in entries[0]["reason"]


def test_a_pass_on_a_body_older_than_the_write_keeps_the_written_replicas() -> None:
    state = state_for()
    loop.notice_manual(state, 1, 4, T0)
    loop.wrote(state, 3, 5)
    assert loop.effective_replicas(state, 1, 4) == 3  # the watch still shows generation 4
    assert loop.notice_manual(state, 1, 4, T0) is None  # not a manual change
    assert loop.effective_replicas(state, 3, 5) == 3


def test_a_change_nobody_here_wrote_is_recorded_as_manual() -> None:
    state = state_for()
    assert loop.notice_manual(state, 2, 3, T0) is None  # first sight: nothing to compare
    entry = loop.notice_manual(state, 3, 4, T0)
    assert entry is not None
    assert (entry["from"], entry["to"]) == (2, 3)
    assert entry["reason"].startswith("Manual: spec.replicas 2 -> 3")
    assert loop.notice_manual(state, 3, 4, T0) is None


def test_too_few_reports_hold_and_say_why() -> None:
    state = state_for()
    ready = [pod(n, ready_at=T0 - timedelta(seconds=60)) for n in "abc"]
    pods = pod_reports(ready, {"a": ServerLoad(running=9)}, T0.timestamp())
    outcome = loop.decide(state, 3, 1, pods, T0)
    assert outcome.scale_to is None
    assert not outcome.active
    assert outcome.condition_reason == Reason.TOO_FEW_REPORTS.value
    assert "only 1 of 3 ready pods" in outcome.condition_message


def test_stale_reports_are_missing_not_zero() -> None:
    state = state_for()
    ready = [pod("a", ready_at=T0 - timedelta(seconds=60))]
    old = (T0 - timedelta(seconds=11)).timestamp()  # older than two scrape intervals
    pods = pod_reports(ready, {"a": ServerLoad(running=0)}, old)
    outcome = loop.decide(state, 2, 1, pods, T0)
    assert outcome.scale_to is None
    assert outcome.condition_reason == Reason.NO_METRICS.value


def test_an_unusable_policy_says_so_instead_of_deciding() -> None:
    state = state_for(stableWindowSeconds=6, panicWindowSeconds=10)
    outcome = loop.decide(state, 1, 1, [], T0)
    assert outcome.decision is None
    assert outcome.scale_to is None
    assert outcome.condition_reason == "InvalidPolicy"
    assert "panicWindowSeconds" in outcome.condition_message


def test_the_state_survives_passes_and_restarts_when_the_spec_changes() -> None:
    first = state_for()
    loop.wrote(first, 3, 7)
    assert loop.autoscaler_state(first, autoscaling(), 5.0) is first
    changed = loop.autoscaler_state(first, autoscaling(maxReplicas=5), 5.0)
    assert changed is not first
    assert changed.autoscaler is not None
    assert changed.autoscaler.config.max_replicas == 5
    assert (changed.written_replicas, changed.written_generation) == (3, 7)


def test_the_condition_reasons_are_the_policys_blind_reasons() -> None:
    assert {loop.REASON_TOO_FEW_REPORTS, loop.REASON_NO_METRICS, loop.REASON_NO_READY_PODS} == {
        r.value for r in BLIND_REASONS
    }
