"""handlers/service.py's autoscaling step: the decision written through the LMService's
scale subresource, the Deployment scaled in the same pass, a lagging watch not undoing
it, and what goes into the status (history, ScalingActive, Events)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from lmoperator.api import LMService, kinds, parse_resource
from lmoperator.handlers import common
from lmoperator.handlers.service import ServerScrape, _autoscale, _record
from lmoperator.kube import Subresource
from lmoperator.reconcile.children import Plan
from lmoperator.reconcile.service import service_ref
from lmoperator.server_metrics import ServerLoad

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ScaleRecorder:
    """Records scale-subresource writes; answers as the API server would (generation+1)."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.patches: list[tuple[str, dict[str, Any], str]] = []

    def patch(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: Subresource = "",
    ) -> dict[str, Any] | None:
        self.patches.append((kind.plural, dict(patch), subresource))
        self.generation += 1
        return {"metadata": {"name": name}, "spec": patch["spec"]}  # a Scale: no generation

    # The autoscaling step makes no other call.
    def get(self, kind: kinds.ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        raise AssertionError("unexpected get")

    def list(self, kind: kinds.ResourceKind, namespace: str, selector: str) -> list[dict[str, Any]]:
        raise AssertionError("unexpected list")

    def create(
        self, kind: kinds.ResourceKind, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        raise AssertionError("unexpected create")

    def delete(
        self, kind: kinds.ResourceKind, namespace: str, name: str, grace_seconds: int | None = None
    ) -> bool:
        raise AssertionError("unexpected delete")

    def create_event(
        self, involved: Mapping[str, str], reason: str, message: str, type_: str = "Normal"
    ) -> None:
        raise AssertionError("unexpected event")


def service(replicas: int) -> LMService:
    doc = {
        "apiVersion": "elasticlm.io/v1alpha1",
        "kind": "LMService",
        "metadata": {"name": "chat", "namespace": "ns"},
        "spec": {
            "replicas": replicas,
            "model": {"hf": {"claimName": "models", "path": "m"}},
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [{"type": "InFlightRequests", "target": 2}],
                "stableWindowSeconds": 6,
                "panicWindowSeconds": 2,
            },
        },
    }
    parsed = parse_resource(doc)
    assert isinstance(parsed, LMService)
    return parsed


def ready_pod(name: str) -> dict[str, Any]:
    since = stamp(NOW - timedelta(seconds=60))
    return {
        "metadata": {"name": name, "creationTimestamp": since},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": since}],
        },
    }


def scrape(**in_flight: int) -> ServerScrape:
    s = ServerScrape(taken_at=NOW.timestamp())
    s.loads = {name: ServerLoad(running=n, waiting=0) for name, n in in_flight.items()}
    return s


def decisions_counted(direction: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "elasticlm_autoscaler_decisions_total",
        {"kind": "LMService", "direction": direction, "reason": reason},
    )
    return value or 0.0


def test_a_scale_up_is_written_to_the_services_scale_and_survives_a_lagging_watch() -> None:
    counted = decisions_counted("up", "MetricAboveTarget")
    kube = ScaleRecorder(generation=4)
    state = common.ObjectState()
    ref = service_ref("chat", "ns", "uid", generation=4)
    svc, outcome = _autoscale(
        kube, ref, service(1), state, [ready_pod("a")], scrape(a=6), NOW, decide=True
    )
    assert kube.patches == [("lmservices", {"spec": {"replicas": 3}}, "scale")]
    assert svc.spec.replicas == 3  # the Deployment is scaled in this pass
    assert outcome is not None
    assert outcome.scale_to == 3
    assert decisions_counted("up", "MetricAboveTarget") == counted + 1
    # A child's event runs a pass on the body the watch still shows (generation 4,
    # replicas 1): it keeps 3 and writes nothing.
    svc, outcome = _autoscale(
        kube, ref, service(1), state, [ready_pod("a")], scrape(a=6), NOW, decide=False
    )
    assert svc.spec.replicas == 3
    assert outcome is None
    assert len(kube.patches) == 1


def test_the_outcome_lands_in_status_and_events() -> None:
    kube = ScaleRecorder(generation=1)
    state = common.ObjectState()
    ref = service_ref("chat", "ns", "uid", generation=1)
    _, outcome = _autoscale(
        kube, ref, service(1), state, [ready_pod("a")], scrape(a=6), NOW, decide=True
    )
    assert outcome is not None
    plan = Plan(status={"scalingHistory": [{"from": 1, "to": 1}] * 20})
    _record(plan, outcome, NOW, 1)
    history = plan.status["scalingHistory"]
    assert len(history) == 20  # the newest 20
    assert (history[-1]["from"], history[-1]["to"]) == (1, 3)
    assert plan.status["lastScaleTime"] == "2026-01-01T12:00:00Z"
    active = next(c for c in plan.status["conditions"] if c["type"] == "ScalingActive")
    assert (active["status"], active["reason"]) == ("True", "MetricsAvailable")
    (event,) = plan.events
    assert event.reason == "Autoscaled"
    assert event.message.startswith("Scaling from 1 to 3: 1 -> 3 replicas (")


def test_too_few_reports_turn_scaling_active_false_with_a_warning() -> None:
    kube = ScaleRecorder(generation=1)
    state = common.ObjectState()
    ref = service_ref("chat", "ns", "uid", generation=1)
    pods = [ready_pod(n) for n in "abc"]
    _, outcome = _autoscale(kube, ref, service(3), state, pods, scrape(a=0), NOW, decide=True)
    assert outcome is not None
    assert kube.patches == []
    plan = Plan(status={})
    _record(plan, outcome, NOW, 1)
    active = next(c for c in plan.status["conditions"] if c["type"] == "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "TooFewReports")
    assert [(e.reason, e.type) for e in plan.events] == [
        ("AutoscalerBlind", "Warning"),
        ("MetricUnavailable", "Warning"),
    ]
    # The condition and the Events name the pods that did not answer.
    assert "pod b's /metrics did not answer" in active["message"]
    assert "pod c's /metrics did not answer" in active["message"]
    assert "Unreachable: pod b's /metrics" in plan.events[1].message
    # The same hold again: nothing new to record, no second warning.
    _, again = _autoscale(kube, ref, service(3), state, pods, scrape(a=0), NOW, decide=True)
    assert again is not None
    assert again.entries == []
    second = Plan(status=dict(plan.status))
    _record(second, again, NOW, 1)
    assert second.events == []
    assert second.status == plan.status


def test_a_manual_kubectl_scale_is_recorded_and_may_be_overridden() -> None:
    kube = ScaleRecorder(generation=1)
    state = common.ObjectState()
    pods = [ready_pod("a")]
    _autoscale(
        kube, service_ref("chat", "ns", "uid", 1), service(1), state, pods, scrape(a=1), NOW,
        decide=True,
    )  # fmt: skip
    # Someone runs kubectl scale lms/chat --replicas=2 (generation 2).
    later = NOW + timedelta(seconds=5)
    _, outcome = _autoscale(
        kube, service_ref("chat", "ns", "uid", 2), service(2), state, pods, scrape(a=1), later,
        decide=True,
    )  # fmt: skip
    assert outcome is not None
    assert outcome.entries[0]["reason"].startswith("Manual: spec.replicas 1 -> 2")
    # The load (1 in flight, target 2) needs one replica: the autoscaler takes it back.
    assert outcome.scale_to == 1
    assert kube.patches[-1] == ("lmservices", {"spec": {"replicas": 1}}, "scale")
    plan = Plan(status={})
    _record(plan, outcome, later, 2)
    assert "ManualScale" in [e.reason for e in plan.events]
