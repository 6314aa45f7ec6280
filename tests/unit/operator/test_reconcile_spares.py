"""Warm spares (spec.elastic.warmSpares) in the pure LMTrainingJob reconciler."""

from __future__ import annotations

import json
from collections.abc import Sequence

from lmoperator.api import LMTrainingJob
from lmoperator.builders.pods import INDEX_LABEL, PROMOTED_ANNOTATION, ROLE_LABEL
from lmoperator.builders.trainingjob import NO_PEERS, network_policy, worker_pod
from lmoperator.reconcile.children import ObservedPod, PatchObject, SparePromotion
from lmoperator.reconcile.trainingjob import observe_job_pod
from lmworker.config import INDEX_ENV, SPARE_ENV
from tests.unit.operator.helpers import make_job
from tests.unit.operator.test_reconcile import (
    RDZV,
    CreatePod,
    DeletePod,
    names,
    run,
    running,
    settle,
    worker,
)


def spare_job(replicas: int = 2, spares: int = 1) -> LMTrainingJob:
    return make_job(replicas=replicas, elastic={"maxReplicas": 4, "warmSpares": spares})


def spare(
    number: int,
    ready: bool = True,
    phase: str = "Running",
    deleting: bool = False,
    exit_code: int | None = None,
) -> ObservedPod:
    return ObservedPod(
        name=f"tiny-lm-spare-{number}",
        uid=f"uid-spare-{number}",
        role="spare",
        index=None,
        phase=phase,
        ready=ready and phase == "Running",
        deleting=deleting,
        exit_code=exit_code,
        ip=f"127.11.0.{number + 1}",
    )


def promoted(number: int, index: int, ready: bool = False) -> ObservedPod:
    """Spare `number` after its relabelling to worker `index`."""
    return ObservedPod(
        name=f"tiny-lm-spare-{number}",
        uid=f"uid-spare-{number}",
        role="worker",
        index=index,
        phase="Running",
        ready=ready,
        ip=f"127.11.0.{number + 1}",
        promoted=True,
    )


def patches(plan_actions: Sequence[object]) -> list[PatchObject]:
    return [a for a in plan_actions if isinstance(a, PatchObject)]


def test_spares_are_created_beside_the_workers_and_counted_apart() -> None:
    plan = run(spare_job(spares=2), {}, [RDZV])
    assert names(plan.actions, CreatePod) == [
        "tiny-lm-worker-0",
        "tiny-lm-worker-1",
        "tiny-lm-spare-0",
        "tiny-lm-spare-1",
    ]
    assert plan.status["spares"] == {"total": 0, "ready": 0, "promoted": 0}
    pods = [*running(), spare(0), spare(1, ready=False)]
    steady = run(spare_job(spares=2), plan.status, pods)
    assert names(steady.actions, CreatePod) == []
    assert steady.status["spares"] == {"total": 2, "ready": 1, "promoted": 0}
    # Spares are no workers: not in replicas, readyReplicas or the scale selector.
    assert steady.status["replicas"] == steady.status["readyReplicas"] == 2
    assert steady.status["selector"].endswith("elasticlm.io/role=worker")


def test_a_job_without_spares_has_no_spares_status() -> None:
    plan = settle(make_job(), running())
    assert "spares" not in plan.status
    assert names(plan.actions, CreatePod) == []


def test_scale_up_promotes_a_ready_spare_and_refills_the_pool() -> None:
    status = settle(spare_job(), [*running(), spare(0)]).status
    plan = run(spare_job(replicas=3), status, [*running(), spare(0)])
    (patch,) = patches(plan.actions)
    assert patch.name == "tiny-lm-spare-0"
    labels = patch.patch["metadata"]["labels"]
    assert labels == {ROLE_LABEL: "worker", INDEX_LABEL: "2"}
    order = json.loads(patch.patch["metadata"]["annotations"][PROMOTED_ANNOTATION])
    assert order == {"index": 2, "expected": 3}
    assert plan.promotions == [SparePromotion("tiny-lm-spare-0", "127.11.0.1", 2, 3)]
    # No new worker pod: the spare is it. The pool is refilled once it trains.
    assert names(plan.actions, CreatePod) == []
    assert plan.status["spares"] == {"total": 0, "ready": 0, "promoted": 1}
    joining = run(spare_job(replicas=3), plan.status, [*running(), promoted(0, 2)])
    assert names(joining.actions, CreatePod) == []
    trains = run(spare_job(replicas=3), plan.status, [*running(), promoted(0, 2, ready=True)])
    # A new spare takes the next free name.
    assert names(trains.actions, CreatePod) == ["tiny-lm-spare-1"]
    assert "SparePromoted" in [e.reason for e in plan.events]
    assert plan.scaled == "up"


def test_the_patch_comes_before_the_order_and_a_stale_pass_repeats_it_unchanged() -> None:
    status = settle(spare_job(), [*running(), spare(0)]).status
    first = run(spare_job(replicas=3), status, [*running(), spare(0)])
    # The relabelling has not reached the operator's view yet: the same decision again.
    stale = run(spare_job(replicas=3), first.status, [*running(), spare(0)])
    assert stale.promotions == first.promotions
    assert [p.patch for p in patches(stale.actions)] == [p.patch for p in patches(first.actions)]


def test_a_promoted_pod_gets_its_order_again_until_it_trains() -> None:
    status = settle(spare_job(replicas=3), [*running(), promoted(0, 2), spare(1)]).status
    plan = run(spare_job(replicas=3), status, [*running(), promoted(0, 2), spare(1)])
    assert plan.promotions == [SparePromotion("tiny-lm-spare-0", "127.11.0.1", 2, 3)]
    assert patches(plan.actions) == []
    assert names(plan.actions, CreatePod) == []
    assert plan.status["spares"] == {"total": 1, "ready": 1, "promoted": 1}
    trains = run(spare_job(replicas=3), status, [*running(), promoted(0, 2, ready=True), spare(1)])
    assert trains.promotions == []


def test_without_a_ready_spare_a_scale_up_starts_a_worker_pod() -> None:
    status = settle(spare_job(), [*running(), spare(0, ready=False)]).status
    plan = run(spare_job(replicas=3), status, [*running(), spare(0, ready=False)])
    assert names(plan.actions, CreatePod) == ["tiny-lm-worker-2"]
    assert plan.promotions == []


def test_a_failed_worker_is_replaced_by_a_spare_in_the_same_pass() -> None:
    job = spare_job()
    status = settle(job, [*running(), spare(0)]).status
    failed = [RDZV, worker(0), worker(1, phase="Failed", exit_code=137), spare(0)]
    plan = run(job, status, failed)
    assert names(plan.actions, DeletePod) == ["tiny-lm-worker-1"]
    assert plan.promotions == [SparePromotion("tiny-lm-spare-0", "127.11.0.1", 1, 2)]
    assert names(plan.actions, CreatePod) == []  # the pool is refilled once it trains
    assert plan.status["restarts"] == 1
    assert plan.status["phase"] == "Restarting"


def test_scale_down_removes_promoted_spares_by_index() -> None:
    pods = [*running(), promoted(0, 2, ready=True), spare(1)]
    status = settle(spare_job(replicas=3), pods).status
    plan = run(spare_job(replicas=2), status, pods)
    assert names(plan.actions, DeletePod) == ["tiny-lm-spare-0"]
    assert plan.promotions == []


def test_failed_spares_are_replaced_and_extra_ones_removed() -> None:
    pods = [*running(), spare(0, phase="Failed", exit_code=137), spare(1), spare(2)]
    status = settle(spare_job(spares=2), running()).status
    plan = run(spare_job(spares=2), status, pods)
    assert names(plan.actions, DeletePod) == ["tiny-lm-spare-0"]
    assert [e.reason for e in plan.events] == ["SpareFailed"]
    assert names(plan.actions, CreatePod) == []  # spare-0's name is still taken
    assert plan.status["restarts"] == 0  # a spare is not the worker group
    fewer = run(spare_job(spares=1), status, [*running(), spare(1), spare(2)])
    assert names(fewer.actions, DeletePod) == ["tiny-lm-spare-2"]
    none = run(spare_job(spares=0), status, [*running(), spare(1)])
    assert names(none.actions, DeletePod) == ["tiny-lm-spare-1"]
    assert "spares" not in none.status  # none wanted, none left


def test_spares_go_with_a_suspended_job() -> None:
    status = settle(spare_job(), [*running(), spare(0)]).status
    suspended = make_job(elastic={"warmSpares": 1}, runPolicy={"suspend": True})
    plan = run(suspended, status, [*running(), spare(0)])
    assert "tiny-lm-spare-0" in names(plan.actions, DeletePod)


def test_a_spare_pod_is_a_worker_pod_without_an_index() -> None:
    job = spare_job()
    pod = worker_pod(job, "uid", 0, "127.96.0.9:29400", spare=True)
    assert pod["metadata"]["name"] == "tiny-lm-spare-0"
    assert pod["metadata"]["labels"][ROLE_LABEL] == "spare"
    assert INDEX_LABEL not in pod["metadata"]["labels"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env[SPARE_ENV] == "1"
    assert INDEX_ENV not in env
    # The job's NetworkPolicy selects it, and admits it as one of the job's own pods.
    policy = network_policy(job, "uid", NO_PEERS)["spec"]
    labels = pod["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    own = policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert own.items() <= labels.items()
    ordinary = worker_pod(job, "uid", 0, "127.96.0.9:29400")
    # The same pod otherwise: volumes (the rendezvous secret's too), probes, security.
    assert pod["spec"]["volumes"] == ordinary["spec"]["volumes"]
    assert pod["spec"]["securityContext"] == ordinary["spec"]["securityContext"]
    observed = observe_job_pod(pod)
    assert (observed.role, observed.index, observed.promoted) == ("spare", None, False)
    pod["metadata"]["labels"].update({ROLE_LABEL: "worker", INDEX_LABEL: "2"})
    pod["metadata"]["annotations"] = {PROMOTED_ANNOTATION: "{}"}
    observed = observe_job_pod(pod)
    assert (observed.role, observed.index, observed.promoted) == ("worker", 2, True)
