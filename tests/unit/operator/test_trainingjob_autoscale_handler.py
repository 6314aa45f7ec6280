"""handlers/trainingjob.py's autoscaling step: a decision written through the job's
scale subresource, a lagging watch not undoing it, the reconciler not recording it as
manual, and what goes into the status (history, ScalingActive, Events, the metric)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from lmoperator.autoscale import jobloop
from lmoperator.handlers import common
from lmoperator.handlers.trainingjob import JobAutoscale, _autoscale, _record
from lmoperator.reconcile.trainingjob import Observed, job_ref, observe_job_pod, reconcile
from lmoperator.worker_metrics import WorkerMetrics
from tests.unit.operator.helpers import make_job
from tests.unit.operator.test_service_autoscale_handler import ScaleRecorder

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def worker(index: int, phase: str = "Running", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"train-worker-{index}",
            "uid": f"u{index}",
            "labels": {
                "elasticlm.io/job": "train",
                "elasticlm.io/role": "worker",
                "elasticlm.io/index": str(index),
            },
            "creationTimestamp": (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "status": {
            "phase": phase,
            "podIP": f"127.10.0.{index + 1}",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "worker", "ready": ready}],
        },
    }


def decisions(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "elasticlm_autoscaler_decisions_total",
        {"kind": "LMTrainingJob", "direction": "up", "reason": reason},
    )
    return value or 0.0


def test_decision_goes_through_the_scale_subresource_and_into_the_status() -> None:
    job = make_job(
        replicas=1,
        elastic={"minReplicas": 1, "maxReplicas": 3},
        autoscaling={"policy": "Throughput", "intervalSeconds": 5, "cooldownSeconds": 0},
    )
    ref = job_ref("train", "ns", "uid-1", generation=1)
    state = common.ObjectState()
    kube = ScaleRecorder(generation=1)
    pods = [worker(0)]
    moment = NOW
    before = decisions("ExploringScalingCurve")
    outcome = None
    for step in range(10, 30):
        moment += timedelta(seconds=1)
        typed, outcome, ours = _autoscale(
            kube, ref, job, state, pods, {}, moment, decide=True
        )  # fmt: skip
        holder = state.autoscale
        assert isinstance(holder, JobAutoscale)
        holder.scrape = {
            "train-worker-0": WorkerMetrics(
                step=step, tokens_per_second=100.0, world_size=1, rank=0, round=1
            )
        }
        holder.scraped_at = moment.timestamp()
        if kube.patches:
            break
    assert kube.patches == [("lmtrainingjobs", {"spec": {"replicas": 2}}, "scale")]
    assert outcome is not None
    assert outcome.scale_to == 2
    assert typed.spec.replicas == 2
    assert ours == 2
    assert decisions("ExploringScalingCurve") == before + 1

    # The reconciler sees a rescale the autoscaler wrote: no manual entry, a new pod.
    observed = Observed(pods=[observe_job_pod(p) for p in pods])
    plan = reconcile(ref, typed, {"targetReplicas": 1}, observed, moment, [], autoscaled_to=ours)
    assert not [h for h in plan.status.get("scalingHistory") or [] if "Manual" in h["reason"]]
    _record(plan, outcome, moment, ref.generation)
    (entry,) = plan.status["scalingHistory"]
    assert (entry["from"], entry["to"]) == (1, 2)
    assert entry["reason"].startswith("ExploringScalingCurve: ")
    assert any(e.reason == "Autoscaled" for e in plan.events)
    active = next(c for c in plan.status["conditions"] if c["type"] == "ScalingActive")
    assert active["status"] == "True"
    assert active["reason"] == "MeasuringThroughput"

    # The watch lags: a body still at replicas 1 (generation 1) is read as 2.
    typed, _, ours = _autoscale(
        kube, ref, job, state, pods, {}, moment + timedelta(seconds=1), decide=False
    )
    assert typed.spec.replicas == 2
    assert ours == 2


def test_too_few_reports_turn_scaling_active_false_with_an_event() -> None:
    job = make_job(
        replicas=3,
        elastic={"minReplicas": 1, "maxReplicas": 4},
        autoscaling={"policy": "Throughput"},
    )
    ref = job_ref("train", "ns", "uid-2", generation=1)
    state = common.ObjectState()
    kube = ScaleRecorder(generation=1)
    pods = [worker(i) for i in range(3)]
    _autoscale(kube, ref, job, state, pods, {}, NOW, decide=False)
    holder = state.autoscale
    assert isinstance(holder, JobAutoscale)
    holder.scrape = {
        "train-worker-0": WorkerMetrics(step=1, tokens_per_second=9.0, world_size=3, rank=0)
    }
    holder.scraped_at = NOW.timestamp()
    _, outcome, _ = _autoscale(kube, ref, job, state, pods, {}, NOW, decide=True)
    assert outcome is not None
    assert not kube.patches
    observed = Observed(pods=[observe_job_pod(p) for p in pods])
    plan = reconcile(ref, job, {"targetReplicas": 3}, observed, NOW, [])
    _record(plan, outcome, NOW, 1)
    active = next(c for c in plan.status["conditions"] if c["type"] == "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "TooFewReports")
    assert "only 1 of 3 ready workers" in active["message"]
    assert any(e.reason == "AutoscalerBlind" and e.type == "Warning" for e in plan.events)


def test_manual_scale_is_recorded_by_the_reconciler() -> None:
    job = make_job(
        replicas=3,
        elastic={"minReplicas": 1, "maxReplicas": 4},
        autoscaling={"policy": "Throughput"},
    )
    ref = job_ref("train", "ns", "uid-3", generation=2)
    state = common.ObjectState()
    kube = ScaleRecorder(generation=2)
    typed, _, ours = _autoscale(kube, ref, job, state, [], {}, NOW, decide=False)
    assert ours is None
    plan = reconcile(ref, typed, {"targetReplicas": 2}, Observed(), NOW, [], autoscaled_to=ours)
    (entry,) = plan.status["scalingHistory"]
    assert entry["reason"].startswith("Manual: spec.replicas 2")


def test_policy_none_clears_the_state() -> None:
    job = make_job(autoscaling={"policy": "None"})
    state = common.ObjectState()
    state.autoscale = JobAutoscale("old")
    ref = job_ref("train", "ns", "uid-4", generation=1)
    typed, outcome, ours = _autoscale(
        ScaleRecorder(1), ref, job, state, [], {}, NOW, decide=True
    )  # fmt: skip
    assert state.autoscale is None
    assert outcome is None
    assert ours is None
    assert typed is job


def test_a_manual_change_back_to_the_autoscalers_count_is_manual() -> None:
    job = make_job(
        replicas=3,
        elastic={"minReplicas": 1, "maxReplicas": 4},
        autoscaling={"policy": "Throughput"},
    )
    state = common.ObjectState()
    kube = ScaleRecorder(generation=1)
    _autoscale(kube, job_ref("train", "ns", "uid-5", 1), job, state, [], {}, NOW, decide=False)
    holder = state.autoscale
    assert isinstance(holder, JobAutoscale)
    jobloop.wrote(holder.loop, 3, generation=2)
    _, _, ours = _autoscale(
        kube, job_ref("train", "ns", "uid-5", 2), job, state, [], {}, NOW, decide=False
    )
    assert ours == 3  # the body of the write itself
    _, _, ours = _autoscale(
        kube, job_ref("train", "ns", "uid-5", 4), job, state, [], {}, NOW, decide=False
    )
    assert ours is None  # generation 4: someone scaled away and back
