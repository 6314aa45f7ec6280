"""handlers/service.py's autoscaling step: the decision written through the LMService's
scale subresource, the Deployment scaled in the same pass, a lagging watch not undoing
it, and what goes into the status (history, ScalingActive, Events)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from lmoperator.api import LMService, kinds, parse_resource
from lmoperator.api.service import MetricsSource, PredictiveScaling, PrometheusSource
from lmoperator.autoscale import loop
from lmoperator.autoscale.history import MetricHistory
from lmoperator.autoscale.policy import Signal
from lmoperator.autoscale.sources.prometheus import Answer
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
        # The history ConfigMaps, by name, as the API server stores them.
        self.configmaps: dict[str, dict[str, Any]] = {}
        self.configmap_writes = 0

    def patch(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: Subresource = "",
    ) -> dict[str, Any] | None:
        if kind == kinds.CONFIG_MAP:
            if name not in self.configmaps:
                return None
            self.configmaps[name]["data"] = dict(patch["data"])
            self.configmap_writes += 1
            return self.configmaps[name]
        self.patches.append((kind.plural, dict(patch), subresource))
        self.generation += 1
        return {"metadata": {"name": name}, "spec": patch["spec"]}  # a Scale: no generation

    # The autoscaling step makes no other call.
    def get(self, kind: kinds.ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind == kinds.CONFIG_MAP, f"unexpected get of {kind.plural}"
        return self.configmaps.get(name)

    def list(self, kind: kinds.ResourceKind, namespace: str, selector: str) -> list[dict[str, Any]]:
        raise AssertionError("unexpected list")

    def create(
        self, kind: kinds.ResourceKind, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        assert kind == kinds.CONFIG_MAP, f"unexpected create of {kind.plural}"
        name = manifest["metadata"]["name"]
        if name in self.configmaps:
            return None
        self.configmaps[name] = dict(manifest)
        self.configmap_writes += 1
        return self.configmaps[name]

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


def predictive_service(replicas: int) -> LMService:
    s = service(replicas)
    autoscaling = s.spec.autoscaling
    assert autoscaling is not None
    spec = autoscaling.model_copy(
        update={"predictive": PredictiveScaling(enabled=True, horizon_seconds=60)}
    )
    return s.model_copy(update={"spec": s.spec.model_copy(update={"autoscaling": spec})})


def run_minutes(
    kube: ScaleRecorder, state: common.ObjectState, start: datetime, minutes: int
) -> None:
    """A pass every 20 s with 2 requests in flight on one pod, at 1 replica."""
    ref = service_ref("chat", "ns", "uid", generation=1)
    for step in range(minutes * 3):
        moment = start + timedelta(seconds=20 * step)
        s = ServerScrape(taken_at=moment.timestamp())
        s.loads = {"a": ServerLoad(running=2, waiting=0)}
        _autoscale(kube, ref, predictive_service(1), state, [ready_pod("a")], s, moment,
                   decide=True)  # fmt: skip


def test_the_history_is_kept_in_an_owned_configmap_and_survives_a_restart() -> None:
    kube = ScaleRecorder(generation=1)
    run_minutes(kube, common.ObjectState(), NOW, 3)
    cm = kube.configmaps["chat-autoscaler-history"]
    (owner,) = cm["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("LMService", "chat", "uid")
    assert cm["metadata"]["labels"] == {"elasticlm.io/autoscaler-history-of": "chat"}
    # Written when a minute closes, not every pass: 3 passes a minute, 2 closed minutes.
    assert kube.configmap_writes == 2
    saved = MetricHistory.from_data(cm["data"])
    assert [v for _, v in saved.series("InFlightRequests")] == [2.0, 2.0]
    assert [r for _, r in saved.replicas()] == [1, 1]

    # A restarted (or newly elected) operator: a fresh state loads the ConfigMap, and
    # the forecaster starts from the saved buckets instead of from nothing.
    restarted = common.ObjectState()
    run_minutes(kube, restarted, NOW + timedelta(minutes=3), 2)
    auto = restarted.autoscale
    assert isinstance(auto, loop.AutoscalerState)
    assert auto.autoscaler is not None
    forecaster = auto.autoscaler.history[Signal.IN_FLIGHT_REQUESTS].model
    # It starts at minute 0 (loaded), not at this operator's first minute (3); minute 2
    # was open when the first operator stopped and is lost (the forecaster's warm-up
    # carries minute 1 over the gap), minute 3 closed here.
    first = int(NOW.timestamp() // 60)
    assert forecaster.warmup[0][0] == first
    assert forecaster.last_index == first + 3
    saved = MetricHistory.from_data(kube.configmaps["chat-autoscaler-history"]["data"])
    minutes = [int((t - NOW.timestamp()) // 60) for t, _ in saved.series("InFlightRequests")]
    assert minutes == [0, 1, 3]


def test_an_unreadable_history_is_said_and_overwritten() -> None:
    kube = ScaleRecorder(generation=1)
    kube.configmaps["chat-autoscaler-history"] = {
        "metadata": {"name": "chat-autoscaler-history"},
        "data": {"history.json": "{not json"},
    }
    state = common.ObjectState()
    ref = service_ref("chat", "ns", "uid", generation=1)
    _, outcome = _autoscale(
        kube, ref, service(1), state, [ready_pod("a")], scrape(a=2), NOW, decide=True
    )
    assert outcome is not None
    assert "is not readable (data.history.json is not JSON)" in outcome.history_problem
    plan = Plan(status={})
    _record(plan, outcome, NOW, 1)
    assert ("HistoryUnavailable", "Warning") in [(e.reason, e.type) for e in plan.events]
    later = NOW + timedelta(minutes=1)
    s = ServerScrape(taken_at=later.timestamp())
    s.loads = {"a": ServerLoad(running=2, waiting=0)}
    _autoscale(kube, ref, service(1), state, [ready_pod("a")], s, later, decide=True)
    data = kube.configmaps["chat-autoscaler-history"]["data"]
    assert MetricHistory.from_data(data).series("InFlightRequests") == [(NOW.timestamp(), 2.0)]


def prometheus_service(replicas: int) -> LMService:
    s = service(replicas)
    autoscaling = s.spec.autoscaling
    assert autoscaling is not None
    spec = autoscaling.model_copy(
        update={
            "source": MetricsSource.PROMETHEUS,
            "prometheus": PrometheusSource(url="http://prometheus:9090"),
        }
    )
    return s.model_copy(update={"spec": s.spec.model_copy(update={"autoscaling": spec})})


def prometheus_scrape(body: dict[str, Any], status: int = 200) -> ServerScrape:
    s = ServerScrape(taken_at=NOW.timestamp())
    s.queries = {Signal.IN_FLIGHT_REQUESTS: "sum(load)"}
    s.answers = {Signal.IN_FLIGHT_REQUESTS: Answer(status, json.dumps(body))}
    s.answered_at = NOW.timestamp()
    return s


def problems_counted(problem: str) -> float:
    value = REGISTRY.get_sample_value(
        "elasticlm_autoscaler_metric_problems_total",
        {"kind": "LMService", "source": "Prometheus", "metric": "InFlightRequests",
         "problem": problem},
    )  # fmt: skip
    return value or 0.0


def test_source_prometheus_scales_on_its_answer_and_holds_on_an_empty_one() -> None:
    kube = ScaleRecorder(generation=1)
    state = common.ObjectState()
    ref = service_ref("chat", "ns", "uid", generation=1)
    high = {"status": "success", "data": {"resultType": "scalar", "result": [1, "6"]}}
    _, outcome = _autoscale(
        kube, ref, prometheus_service(1), state, [ready_pod("a")], prometheus_scrape(high),
        NOW, decide=True,
    )  # fmt: skip
    assert outcome is not None
    assert outcome.scale_to == 3
    assert outcome.condition_message == "The autoscaler decides from Prometheus's answers"

    counted = problems_counted("Empty")
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    later = NOW + timedelta(seconds=5)
    _, outcome = _autoscale(
        kube, ref, prometheus_service(3), state, [ready_pod("a")], prometheus_scrape(empty),
        later, decide=True,
    )  # fmt: skip
    assert outcome is not None
    assert outcome.scale_to is None  # held at 3, not scaled down to the minimum
    assert (outcome.active, outcome.condition_reason) == (False, "NoMetrics")
    assert "InFlightRequests (query 'sum(load)') returned an empty result" in (
        outcome.condition_message
    )
    assert problems_counted("Empty") == counted + 1
    plan = Plan(status={})
    _record(plan, outcome, later, 2)
    reasons = [e.reason for e in plan.events]
    assert reasons == ["AutoscalerBlind", "MetricUnavailable"]
