"""The LMTrainingJob autoscaler end to end on devcluster: real workers whose pace follows
a synthetic scaling curve (ELASTICLM_SYNTHETIC_SCALING), so what the autoscaler must find
is known, and a node too small for the next worker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from lmoperator.localstack import LocalStack, local_stack
from tests.integration.harness import E2E, kubectl_lm
from tests.integration.test_training_job import Job, operator_metrics

pytestmark = [
    pytest.mark.skipif(E2E, reason="needs devcluster: pods read local claim dirs"),
    pytest.mark.timeout(300),
]

GLOBAL_BATCH = 16  # one micro-batch of 4 for each of up to 4 workers
# tiny preset (context 128) x GLOBAL_BATCH: tokens a step.
TOKENS_PER_STEP = 128 * GLOBAL_BATCH
# One worker: a step in 1.2 s; every size's step time follows the curve.
T1 = TOKENS_PER_STEP / 1.2


def marginal_efficiency(n: int, alpha: float) -> float:
    def throughput(k: int) -> float:
        return k * T1 / (1 + alpha * (k - 1))

    return (throughput(n + 1) - throughput(n)) / T1


def autoscaled(job: Job, *, alpha: float, cpu: str, **autoscaling: Any) -> dict[str, Any]:
    return {
        "autoscaling": {
            "policy": "Throughput",
            "intervalSeconds": 5,
            "cooldownSeconds": 0,
            **autoscaling,
        },
        "training": {
            "steps": 5000,  # never reached: the test ends the job
            "globalBatchSize": GLOBAL_BATCH,
            "microBatchSize": 4,
            "learningRate": 0.003,
            "seed": 3,
        },
        "checkpoint": {"claimName": "checkpoints", "path": job.name, "intervalSteps": 1000},
        "worker": {
            "resources": {"requests": {"cpu": cpu}},
            "env": [{"name": "ELASTICLM_SYNTHETIC_SCALING", "value": f"t1={T1:g},alpha={alpha}"}],
        },
    }


def history(job: Job) -> list[dict[str, Any]]:
    return list(job.status().get("scalingHistory") or [])


def events(job: Job, reason: str) -> list[Any]:
    return [e for e in job.core.list_namespaced_event(job.ns).items if e.reason == reason]


@pytest.fixture
def big_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("autoscale") / "devcluster") as s:
        yield s


@pytest.fixture
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # The rendezvous pod (50m) and two 700m workers fit; a third does not.
    args = ("--node-cpu", "1600m", "--node-memory", "8Gi")
    with local_stack(tmp_path_factory.mktemp("small") / "devcluster", devcluster_args=args) as s:
        yield s


def end(job: Job) -> None:
    if job.get() is not None:
        job.custom.delete_namespaced_custom_object("elasticlm.io", "v1alpha1", job.ns,
                                                   "lmtrainingjobs", job.name)  # fmt: skip
    job.delete_namespace()


def test_throughput_grows_from_min_and_stops_where_efficiency_drops(big_node: LocalStack) -> None:
    alpha, min_efficiency = 0.1, 0.6
    # The curve's answer: 1 -> 2 -> 3 add >= 60 % of a worker each, a 4th would add 58 %.
    assert marginal_efficiency(2, alpha) >= min_efficiency > marginal_efficiency(3, alpha)
    job = Job(big_node)
    try:
        job.create(
            replicas=1,
            elastic={"minReplicas": 1, "maxReplicas": 4},
            **autoscaled(job, alpha=alpha, cpu="100m", minEfficiency=min_efficiency),
        )
        job.wait(
            "the autoscaler holding at its best size, 3",
            lambda s: any(
                h["to"] == 3 and h["reason"].startswith("AtBestSize")
                for h in s.get("scalingHistory") or []
            ),
            timeout=200,
        )
        steps = [(h["from"], h["to"], h["reason"].split(":")[0]) for h in history(job)]
        scales = [s for s in steps if s[0] != s[1]]
        assert scales == [(1, 2, "ExploringScalingCurve"), (2, 3, "GrowWhileEfficient")], steps
        best = next(h for h in history(job) if h["reason"].startswith("AtBestSize"))
        assert best["metrics"]["bestSize"] == 3.0
        assert best["metrics"]["alpha"] == pytest.approx(alpha, abs=0.02)
        assert best["metrics"]["t1"] == pytest.approx(T1, rel=0.05)
        obj = job.get()
        assert obj is not None
        assert obj["spec"]["replicas"] == 3
        active = job.condition("ScalingActive")
        assert (active["status"], active["reason"]) == ("True", "MeasuringThroughput")
        assert len(events(job, "Autoscaled")) == 2
        metrics = operator_metrics(big_node)
        assert re.search(
            r'elasticlm_autoscaler_decisions_total\{direction="up",kind="LMTrainingJob",'
            r'reason="GrowWhileEfficient"\} 1\.0',
            metrics,
        ), metrics
        described = kubectl_lm(big_node.kubeconfig, job.ns, "describe", f"lmtj/{job.name}").stdout
        assert "GrowWhileEfficient" in described
        assert "AtBestSize" in described
        # A manual scale is recorded as one; the autoscaler owns spec.replicas and may
        # take it back to the best size once it has measured the new one again.
        job.scale(2)
        job.wait(
            "the manual scale recorded",
            lambda s: any(
                h["reason"].startswith("Manual: spec.replicas 3 → 2")
                for h in s.get("scalingHistory") or []
            ),
            timeout=30,
        )
    finally:
        end(job)


def test_a_worker_with_no_room_is_removed_and_the_job_backs_off(small_node: LocalStack) -> None:
    job = Job(small_node)
    try:
        job.create(
            replicas=2,
            elastic={"minReplicas": 1, "maxReplicas": 3},
            **autoscaled(job, alpha=0.0, cpu="700m", minEfficiency=0.5, pendingTimeoutSeconds=5),
        )
        job.wait(
            "the third worker timing out in Pending and the job backing off to 2",
            lambda s: any(
                (h["from"], h["to"]) == (3, 2) and h["reason"].startswith("PendingTimeout")
                for h in s.get("scalingHistory") or []
            ),
            timeout=200,
        )
        (failed,) = {e.message for e in events(job, "FailedScheduling")}
        assert failed == "0/1 nodes are available: 1 Insufficient cpu."
        assert events(job, "ScaleUpBackoff")
        job.wait(
            "the Pending worker gone and training going on at 2",
            lambda s: len(job.pods("worker")) == 2 and s.get("worldSize") == 2,
        )
        start = int(job.status().get("step") or 0)
        job.wait_step(start + 3, timeout=60)
        job.wait(
            "a CapacityBackoff hold",
            lambda s: any(
                h["reason"].startswith("CapacityBackoff") for h in s.get("scalingHistory") or []
            ),
            timeout=60,
        )
        obj = job.get()
        assert obj is not None
        assert obj["spec"]["replicas"] == 2
        assert not [h for h in history(job) if h["to"] == 3 and h["from"] == 2][1:]
    finally:
        end(job)
