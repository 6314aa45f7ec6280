"""The pure LMTrainingJob reconciler, rule by rule."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lmoperator.api import InvalidResourceError, LMTrainingJob, kinds
from lmoperator.api.trainingjob import LMTrainingJobStatus, RestartPolicy
from lmoperator.builders.trainingjob import NO_PEERS, NetworkPeers, network_policy
from lmoperator.reconcile.children import (
    Action,
    CreateObject,
    DeleteObject,
    ObservedObject,
    ObservedPod,
    ObservedService,
    OwnerRef,
    PatchObject,
    Plan,
    observe_service,
)
from lmoperator.reconcile.trainingjob import (
    Observed,
    is_permanent_failure,
    job_ref,
    observe_job_pod,
    reconcile,
    record_validation,
)
from lmoperator.worker_metrics import WorkerMetrics
from lmworker.config import WorkerConfig
from tests.unit.operator.helpers import make_job

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
REF = job_ref("tiny-lm", "ns", "job-uid", generation=1)

# What an action does to which kind of object.
ActionKind = tuple[type[CreateObject] | type[DeleteObject], kinds.ResourceKind]
CreatePod: ActionKind = (CreateObject, kinds.POD)
CreateService: ActionKind = (CreateObject, kinds.K8S_SERVICE)
DeletePod: ActionKind = (DeleteObject, kinds.POD)
DeleteJob: ActionKind = (DeleteObject, kinds.TRAINING_JOB)


def is_(action: Action, what: ActionKind) -> bool:
    cls, kind = what
    return isinstance(action, cls) and action.kind == kind


def kinds_of(actions: Sequence[Action]) -> list[ActionKind]:
    return [(type(a), a.kind) for a in actions if isinstance(a, CreateObject | DeleteObject)]


SERVICE = ObservedService("tiny-lm-rdzv", "127.96.0.9")


def worker(
    index: int,
    phase: str = "Running",
    ready: bool = True,
    deleting: bool = False,
    exit_code: int | None = None,
    message: str | None = None,
    uid: str | None = None,
) -> ObservedPod:
    return ObservedPod(
        name=f"tiny-lm-worker-{index}",
        uid=uid or f"uid-{index}",
        role="worker",
        index=index,
        phase=phase,
        ready=ready and phase == "Running",
        deleting=deleting,
        exit_code=exit_code,
        termination_message=message,
        ip=f"127.10.0.{index + 1}",
    )


def existing_policy(job: LMTrainingJob, spec: dict[str, Any] | None = None) -> ObservedObject:
    manifest = network_policy(job, REF.uid, NO_PEERS)
    return ObservedObject(
        "NetworkPolicy", "tiny-lm-pods", "uid-np", "network", spec=spec or manifest["spec"]
    )


RDZV = ObservedPod("tiny-lm-rdzv", "uid-rdzv", "rdzv", None, "Running", ready=True)


def running(replicas: int = 2) -> list[ObservedPod]:
    return [RDZV, *(worker(i) for i in range(replicas))]


def run(
    job: LMTrainingJob | InvalidResourceError | None = None,
    status: dict[str, Any] | None = None,
    pods: Sequence[ObservedPod] = (),
    services: Sequence[ObservedService] = (SERVICE,),
    metrics: WorkerMetrics | None = None,
    now: datetime = NOW,
    ref: OwnerRef = REF,
    policies: Sequence[ObservedObject] | None = None,
) -> Plan:
    """`policies` default to the job's NetworkPolicy, existing and up to date."""
    job = job if job is not None else make_job()
    if policies is None:
        policies = [existing_policy(job)] if isinstance(job, LMTrainingJob) else []
    plan = reconcile(ref, job, status, Observed(pods, services, metrics, policies), now)
    # Every status the reconciler writes is valid for the API.
    LMTrainingJobStatus.model_validate(plan.status, strict=False)
    return plan


def settle(job: LMTrainingJob, pods: Sequence[ObservedPod], passes: int = 1) -> Plan:
    """A job that has run a pass with `pods` existing, so its status is established."""
    plan = run(job, {}, pods)
    for _ in range(passes - 1):
        plan = run(job, plan.status, pods)
    return plan


def names(actions: Sequence[Action], what: ActionKind) -> list[str]:
    return [a.name for a in actions if is_(a, what)]


def condition(plan: Plan, type_: str) -> dict[str, Any]:
    (found,) = [c for c in plan.status["conditions"] if c["type"] == type_]
    return dict(found)


# -- creation -----------------------------------------------------------------------------


def test_creates_the_service_first_and_nothing_else() -> None:
    plan = run(services=())
    assert len(plan.actions) == 1
    (action,) = plan.actions
    assert is_(action, CreateService)
    assert action.name == "tiny-lm-rdzv"
    assert plan.status["phase"] == "Pending"
    assert condition(plan, "Created")["status"] == "True"
    assert plan.status["startTime"] == "2025-01-01T12:00:00Z"
    assert plan.status["selector"] == "elasticlm.io/job=tiny-lm,elasticlm.io/role=worker"
    assert plan.status["observedGeneration"] == 1
    assert [e.reason for e in plan.events] == ["JobCreated"]


def test_waits_for_the_cluster_ip() -> None:
    assert run(services=[ObservedService("tiny-lm-rdzv", None)]).actions == []


def test_creates_rdzv_pod_then_workers_in_order() -> None:
    plan = run()
    assert [a.name for a in plan.actions] == [
        "tiny-lm-rdzv-auth",
        "tiny-lm-rdzv",
        "tiny-lm-worker-0",
        "tiny-lm-worker-1",
    ]
    assert isinstance(plan.actions[0], CreateObject)
    assert plan.actions[0].kind == kinds.SECRET
    assert all(is_(a, CreatePod) for a in plan.actions[1:])
    worker_manifest = plan.actions[3].manifest  # type: ignore[union-attr]
    env = {e["name"]: e.get("value") for e in worker_manifest["spec"]["containers"][0]["env"]}
    assert env["ELASTICLM_RDZV_ADDR"] == "127.96.0.9:29400"
    assert WorkerConfig.from_json(env["ELASTICLM_CONFIG"]).job == "tiny-lm"


def test_the_secret_comes_before_the_store_and_keeps_its_token_out_of_reprs() -> None:
    plan = reconcile(REF, make_job(), {}, Observed((), (SERVICE,)), NOW, new_token=lambda: "t0k")
    secret, policy = plan.actions[1], plan.actions[0]
    assert isinstance(policy, CreateObject)
    assert policy.kind == kinds.NETWORK_POLICY
    assert isinstance(secret, CreateObject)
    assert secret.kind == kinds.SECRET
    assert secret.manifest["data"] == {"token": "dDBr"}  # base64 of t0k
    owner = secret.manifest["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("LMTrainingJob", REF.uid, True)
    assert "dDBr" not in repr(plan)
    # A store pod that exists: no new secret (the token running pods hold stays).
    assert not any(a.kind == kinds.SECRET for a in run(pods=[RDZV]).actions)


def test_the_network_policy_is_created_updated_and_removed_with_the_spec() -> None:
    job = make_job()
    peers = NetworkPeers(
        operator=({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "elasticlm"}}},),
        scrapers=({"namespaceSelector": {"matchLabels": {"name": "monitoring"}}},),
    )
    plan = reconcile(REF, job, {}, Observed(running(), (SERVICE,)), NOW, peers=peers)
    (create,) = plan.actions
    assert isinstance(create, CreateObject)
    assert create.name == "tiny-lm-pods"
    spec = create.manifest["spec"]
    own = {"podSelector": {"matchLabels": {"elasticlm.io/job": "tiny-lm"}}}
    assert spec["podSelector"] == own["podSelector"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {"from": [own]},  # every port: gloo uses ephemeral ones
        {"from": [*peers.operator, *peers.scrapers], "ports": [{"protocol": "TCP", "port": 9400}]},
    ]
    # Peers changed (a chart upgrade): the spec is patched in place.
    stale = existing_policy(job)
    plan = reconcile(REF, job, {}, Observed(running(), (SERVICE,), None, [stale]), NOW, peers=peers)
    (patch,) = plan.actions
    assert isinstance(patch, PatchObject)
    assert patch.patch == {"spec": spec}
    # Opted out: removed.
    off = make_job(networkPolicy={"enabled": False})
    (delete,) = run(off, pods=running(), policies=[existing_policy(job)]).actions
    assert isinstance(delete, DeleteObject)
    assert delete.kind == kinds.NETWORK_POLICY
    assert run(off, pods=running(), policies=[]).actions == []


def test_without_peers_the_policy_admits_only_the_jobs_own_pods() -> None:
    spec = network_policy(make_job(), REF.uid, NO_PEERS)["spec"]
    # Never a rule with an empty `from`, which would admit everyone.
    assert spec["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"elasticlm.io/job": "tiny-lm"}}}]}
    ]


def test_no_duplicates_when_pods_exist_or_terminate() -> None:
    pods = [RDZV, worker(0), worker(1, deleting=True, phase="Running")]
    plan = run(pods=pods)
    assert plan.actions == []
    assert plan.status["replicas"] == 1  # the terminating pod is not counted


def test_running_once_min_replicas_are_ready() -> None:
    job = make_job(elastic={"minReplicas": 2})
    pending = run(job, pods=[RDZV, worker(0), worker(1, ready=False)])
    assert pending.status["phase"] == "Pending"
    plan = run(job, pending.status, running())
    assert plan.status["phase"] == "Running"
    assert condition(plan, "Running")["status"] == "True"
    assert plan.status["readyReplicas"] == 2


def test_conditions_keep_their_transition_time() -> None:
    first = run(pods=running())
    later = run(status=first.status, pods=running(), now=NOW + timedelta(minutes=5))
    assert condition(later, "Running") == condition(first, "Running")
    assert later.events == []


# -- scaling ------------------------------------------------------------------------------


def test_scale_up_creates_missing_index_and_records_history() -> None:
    status = settle(make_job(), running()).status
    metrics = WorkerMetrics(step=10, tokens_per_second=100.0, world_size=2, rank=0)
    plan = run(make_job(replicas=3), status, running(), metrics=metrics)
    assert names(plan.actions, CreatePod) == ["tiny-lm-worker-2"]
    (decision,) = plan.status["scalingHistory"]
    assert decision["from"] == 2
    assert decision["to"] == 3
    assert decision["reason"] == "Manual: spec.replicas 2 → 3"
    assert decision["metrics"]["tokensPerSecond"] == 100.0
    scaling = condition(plan, "Scaling")
    assert (scaling["status"], scaling["reason"], scaling["message"]) == (
        "True",
        "ScalingUp",
        "2 → 3 workers",
    )
    assert plan.status["phase"] == "Scaling"
    assert plan.scaled == "up"
    assert [e.reason for e in plan.events] == ["ScalingUp"]

    # Still scaling while the new worker is not ready or the world size lags.
    pods3 = [*running(), worker(2)]
    again = run(make_job(replicas=3), plan.status, pods3, metrics=metrics)
    assert condition(again, "Scaling")["status"] == "True"
    assert len(again.status["scalingHistory"]) == 1  # recorded once
    done = run(make_job(replicas=3), again.status, pods3, metrics=WorkerMetrics(world_size=3))
    assert condition(done, "Scaling")["status"] == "False"
    assert done.status["phase"] == "Running"


def test_scale_down_deletes_highest_indexes_first_with_grace() -> None:
    pods = [RDZV, *(worker(i) for i in range(3))]
    status = settle(make_job(replicas=3), pods).status
    plan = run(make_job(replicas=1), status, pods)
    deletes = [a for a in plan.actions if isinstance(a, DeleteObject) and a.kind == kinds.POD]
    assert [d.name for d in deletes] == ["tiny-lm-worker-2", "tiny-lm-worker-1"]
    assert all(d.grace_seconds is None and d.reason == "ScaleDown" for d in deletes)
    assert condition(plan, "Scaling")["reason"] == "ScalingDown"
    assert plan.scaled == "down"
    assert not any(is_(a, CreatePod) for a in plan.actions)


def test_scaled_down_worker_exiting_is_not_a_failure() -> None:
    pods = [RDZV, worker(0), worker(1, phase="Failed", exit_code=143)]
    status = settle(make_job(replicas=2), running()).status
    plan = run(make_job(replicas=1), status, pods)
    assert plan.status["restarts"] == 0
    assert names(plan.actions, DeletePod) == ["tiny-lm-worker-1"]


# -- failures -----------------------------------------------------------------------------


def test_failed_worker_is_replaced_and_counted_once() -> None:
    job = make_job()
    status = settle(job, running()).status
    failed = [RDZV, worker(0), worker(1, phase="Failed", exit_code=137)]
    plan = run(job, status, failed)
    (delete,) = plan.actions
    assert isinstance(delete, DeleteObject)
    assert delete.kind == kinds.POD
    assert delete.name == "tiny-lm-worker-1"
    assert delete.grace_seconds == 0
    assert plan.status["restarts"] == 1
    assert plan.status["countedFailures"] == ["uid-1"]
    assert condition(plan, "Restarting")["status"] == "True"
    assert plan.status["phase"] == "Restarting"
    assert [e.reason for e in plan.events] == ["WorkerFailed"]
    assert plan.events[0].type == "Warning"

    # The same failed pod seen again (the delete failed, or a second handler ran): no recount.
    again = run(job, plan.status, failed)
    assert again.status["restarts"] == 1
    assert again.events == []
    # While it terminates, and once it is gone: no recount, then the replacement.
    terminating = [RDZV, worker(0), worker(1, phase="Failed", exit_code=137, deleting=True)]
    assert run(job, again.status, terminating).actions == []
    gone = run(job, again.status, [RDZV, worker(0)])
    assert names(gone.actions, CreatePod) == ["tiny-lm-worker-1"]
    assert gone.status["restarts"] == 1
    assert condition(gone, "Restarting")["status"] == "True"
    replaced = run(job, gone.status, [RDZV, worker(0), worker(1, uid="uid-new")])
    assert condition(replaced, "Restarting")["status"] == "False"
    assert replaced.status["phase"] == "Running"


def test_permanent_exit_code_fails_the_job_with_its_message() -> None:
    job = make_job()
    status = settle(job, running()).status
    pods = [RDZV, worker(0), worker(1, "Failed", exit_code=3, message="data path /data/x missing")]
    plan = run(job, status, pods)
    assert plan.status["phase"] == "Failed"
    failed = condition(plan, "Failed")
    assert failed["reason"] == "WorkerFailed"
    assert "exit code 3" in failed["message"]
    assert "data path /data/x missing" in failed["message"]
    # cleanPodPolicy Running: the running pods go, the failed one stays for its logs.
    assert sorted(names(plan.actions, DeletePod)) == ["tiny-lm-rdzv", "tiny-lm-worker-0"]
    assert "completionTime" in plan.status
    assert condition(plan, "Running")["status"] == "False"


def test_restart_policy_never_fails_on_any_failure() -> None:
    job = make_job(runPolicy={"restartPolicy": "Never"})
    status = settle(job, running()).status
    plan = run(job, status, [RDZV, worker(0), worker(1, "Failed", exit_code=137)])
    assert plan.status["phase"] == "Failed"
    assert condition(plan, "Failed")["reason"] == "WorkerFailed"


@pytest.mark.parametrize(
    ("policy", "code", "permanent"),
    [
        (RestartPolicy.ON_FAILURE, 1, False),
        (RestartPolicy.ON_FAILURE, 3, True),
        (RestartPolicy.ON_FAILURE, 137, False),
        (RestartPolicy.EXIT_CODE, 1, True),
        (RestartPolicy.EXIT_CODE, 3, True),
        (RestartPolicy.EXIT_CODE, 127, True),
        (RestartPolicy.EXIT_CODE, 130, False),
        (RestartPolicy.EXIT_CODE, 137, False),
        (RestartPolicy.EXIT_CODE, 143, False),
        (RestartPolicy.EXIT_CODE, None, False),
        (RestartPolicy.NEVER, 137, True),
    ],
)
def test_permanent_failures(policy: RestartPolicy, code: int | None, permanent: bool) -> None:
    assert is_permanent_failure(policy, code) is permanent


def test_backoff_limit_exceeded() -> None:
    # maxRestarts 5, backoffLimit 4 in the example: the 5th failure is one too many.
    job = make_job()
    status = settle(job, running()).status
    status["restarts"] = 4
    plan = run(job, status, [RDZV, worker(0), worker(1, "Failed", exit_code=1)])
    assert plan.status["restarts"] == 5
    assert plan.status["phase"] == "Failed"
    failed = condition(plan, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "limit of 4" in failed["message"]
    assert "tiny-lm-worker-1" not in names(plan.actions, DeletePod)


def test_min_of_backoff_limit_and_max_restarts() -> None:
    job = make_job(elastic={"maxRestarts": 0})
    status = settle(job, running()).status
    plan = run(job, status, [RDZV, worker(0), worker(1, "Failed", exit_code=1)])
    assert condition(plan, "Failed")["reason"] == "BackoffLimitExceeded"


# -- success and cleanup ------------------------------------------------------------------


def completed(index: int, step: int = 300, validation_loss: float | None = 2.5) -> ObservedPod:
    """A finished worker's report; rank 0's carries the final held-out loss (the example
    job holds out text), another rank's (validation_loss=None) does not."""
    report: dict[str, Any] = {"completed": True, "step": step}
    if validation_loss is not None:
        report["validationLoss"] = validation_loss
    return worker(index, "Succeeded", exit_code=0, message=json.dumps(report))


def test_success_from_the_termination_message() -> None:
    job = make_job()
    status = settle(job, running()).status
    plan = run(job, status, [RDZV, completed(0), worker(1)])
    assert plan.status["phase"] == "Succeeded"
    succeeded = condition(plan, "Succeeded")
    assert succeeded["reason"] == "TrainingCompleted"
    assert plan.status["completionTime"] == "2025-01-01T12:00:00Z"
    assert plan.status["step"] == 300
    # cleanPodPolicy Running: pods still running are deleted, the finished one kept.
    assert sorted(names(plan.actions, DeletePod)) == ["tiny-lm-rdzv", "tiny-lm-worker-1"]
    assert [e.reason for e in plan.events] == ["TrainingCompleted"]


def test_completion_report_counts_even_if_the_exit_failed() -> None:
    """A worker killed while exiting (after its report) still finished the training."""
    job = make_job(runPolicy={"restartPolicy": "ExitCode"})
    status = settle(job, running()).status
    report = json.dumps({"completed": True, "step": 300, "validationLoss": 2.5})
    plan = run(job, status, [RDZV, worker(0, "Failed", exit_code=1, message=report), worker(1)])
    assert plan.status["phase"] == "Succeeded"
    assert plan.status.get("restarts", 0) == 0


def test_a_report_kept_by_the_exit_watchdog_is_success() -> None:
    """The worker's exit hung after its report; its watchdog exited 0 and said so."""
    job = make_job(runPolicy={"restartPolicy": "ExitCode"})
    status = settle(job, running()).status
    report = json.dumps(
        {
            "completed": True,
            "step": 300,
            "loss": 1.25,
            "validationLoss": 2.5,
            "exitWatchdog": "exit watchdog: ...",
        }
    )
    plan = run(job, status, [RDZV, worker(0, "Succeeded", exit_code=0, message=report), worker(1)])
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["loss"] == 1.25


def test_a_watchdog_exit_without_a_report_is_no_success() -> None:
    job = make_job(runPolicy={"restartPolicy": "ExitCode"})
    status = settle(job, running()).status
    message = json.dumps({"completed": False, "permanent": False, "error": "exit watchdog: ..."})
    plan = run(job, status, [RDZV, worker(0, "Failed", exit_code=70, message=message), worker(1)])
    assert plan.status["phase"] != "Succeeded"


def test_success_waits_for_the_report_with_the_final_held_out_loss() -> None:
    """Rank 1 finishes first; rank 0 is still measuring the held-out loss."""
    job = make_job()
    status = settle(job, running()).status
    metrics = WorkerMetrics(step=250, validation_loss=3.0, validation_step=200)
    status = run(job, status, running(), metrics=metrics).status
    early = run(job, status, [RDZV, worker(0), completed(1, validation_loss=None)])
    assert early.status["phase"] != "Succeeded"
    assert early.status["validationLoss"] == 3.0
    plan = run(job, early.status, [RDZV, completed(0), completed(1, validation_loss=None)])
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["validationLoss"] == 2.5
    assert plan.status["validationHistory"][-1] == {"step": 300, "loss": 2.5}
    assert condition(plan, "Succeeded")["message"].startswith("tiny-lm-worker-0 reported")
    # Without a held-out loss to wait for (rank 0 found none), all members ending decides.
    last = [RDZV, completed(0, validation_loss=None), completed(1, validation_loss=None)]
    none = run(job, early.status, last)
    assert none.status["phase"] == "Succeeded"
    # A job that holds out nothing needs no such report.
    plain = make_job(data={"path": "corpus.txt", "validationFraction": 0})
    status = settle(plain, running()).status
    done = run(plain, status, [RDZV, worker(0), completed(1, validation_loss=None)])
    assert done.status["phase"] == "Succeeded"


def test_early_completion_report_is_not_success() -> None:
    job = make_job()
    status = settle(job, running()).status
    plan = run(job, status, [RDZV, completed(0, step=100), worker(1)])
    assert plan.status["phase"] != "Succeeded"


def test_success_from_metrics_when_all_workers_exited() -> None:
    job = make_job()
    status = settle(job, running()).status
    status["step"] = 300
    exited = [RDZV, worker(0, "Succeeded", exit_code=0), worker(1, "Succeeded", exit_code=0)]
    plan = run(job, status, exited)
    assert plan.status["phase"] == "Succeeded"


def test_worker_that_exits_zero_before_the_end_is_replaced_without_a_restart() -> None:
    job = make_job()
    status = settle(job, running()).status
    plan = run(job, status, [RDZV, worker(0), worker(1, "Succeeded", exit_code=0)])
    assert names(plan.actions, DeletePod) == ["tiny-lm-worker-1"]
    assert plan.status["restarts"] == 0


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [
        ("Running", ["tiny-lm-rdzv", "tiny-lm-worker-1"]),
        ("All", ["tiny-lm-rdzv", "tiny-lm-worker-0", "tiny-lm-worker-1"]),
        ("None", []),
    ],
)
def test_clean_pod_policy(policy: str, deleted: list[str]) -> None:
    job = make_job(runPolicy={"cleanPodPolicy": policy})
    status = settle(job, running()).status
    plan = run(job, status, [RDZV, completed(0), worker(1)])
    assert sorted(names(plan.actions, DeletePod)) == deleted


def test_finished_jobs_are_terminal() -> None:
    job = make_job()
    status = settle(job, running()).status
    done = run(job, status, [RDZV, completed(0), worker(1)])
    # Everything is gone: nothing is recreated, the phase stays.
    later = run(job, done.status, [], now=NOW + timedelta(hours=1))
    assert later.actions == []
    assert later.status["phase"] == "Succeeded"
    assert later.status["completionTime"] == done.status["completionTime"]
    assert later.events == []


def test_ttl_after_finished_deletes_the_job() -> None:
    job = make_job(runPolicy={"ttlSecondsAfterFinished": 60})
    status = settle(job, running()).status
    done = run(job, status, [RDZV, completed(0), worker(1)])
    assert not any(is_(a, DeleteJob) for a in done.actions)
    early = run(job, done.status, [], now=NOW + timedelta(seconds=59))
    assert early.actions == []
    late = run(job, done.status, [], now=NOW + timedelta(seconds=60))
    assert kinds_of(late.actions) == [DeleteJob]


# -- suspend, deadline ----------------------------------------------------------------------


def test_suspend_deletes_all_pods_and_resume_recreates_them() -> None:
    status = settle(make_job(), running()).status
    suspended = run(make_job(runPolicy={"suspend": True}), status, running())
    assert sorted(names(suspended.actions, DeletePod)) == [
        "tiny-lm-rdzv",
        "tiny-lm-worker-0",
        "tiny-lm-worker-1",
    ]
    assert all(a.grace_seconds is None for a in suspended.actions)  # type: ignore[union-attr]
    assert suspended.status["phase"] == "Suspended"
    assert condition(suspended, "Suspended")["status"] == "True"
    assert condition(suspended, "Running")["status"] == "False"
    # While suspended, nothing is created.
    idle = run(make_job(runPolicy={"suspend": True}), suspended.status, [])
    assert idle.actions == []
    resumed = run(make_job(), idle.status, [], now=NOW + timedelta(minutes=1))
    assert names(resumed.actions, CreatePod) == [
        "tiny-lm-rdzv",
        "tiny-lm-worker-0",
        "tiny-lm-worker-1",
    ]
    assert (
        condition(resumed, "Suspended")["status"],
        condition(resumed, "Suspended")["reason"],
    ) == (
        "False",
        "Resumed",
    )
    assert resumed.status["startTime"] == "2025-01-01T12:01:00Z"
    assert [e.reason for e in resumed.events] == ["Resumed"]


def test_active_deadline() -> None:
    job = make_job(runPolicy={"activeDeadlineSeconds": 600, "cleanPodPolicy": "None"})
    status = settle(job, running()).status
    assert (
        run(job, status, running(), now=NOW + timedelta(seconds=599)).status["phase"] == "Running"
    )
    plan = run(job, status, running(), now=NOW + timedelta(seconds=600))
    assert plan.status["phase"] == "Failed"
    assert condition(plan, "Failed")["reason"] == "DeadlineExceeded"
    # Running pods are deleted whatever the cleanPodPolicy.
    assert len(names(plan.actions, DeletePod)) == 3


# -- invalid specs ------------------------------------------------------------------------


def test_invalid_pod_template_fails_without_actions() -> None:
    template = {
        "spec": {"containers": [{"name": "worker", "securityContext": {"privileged": True}}]}
    }
    job = make_job(worker={"podTemplate": template})
    plan = run(job, {}, services=())
    assert plan.actions == []
    assert plan.status["phase"] == "Failed"
    failed = condition(plan, "Failed")
    assert failed["reason"] == "Invalid"
    assert failed["message"] == (
        "spec.worker.podTemplate.spec.containers[worker].securityContext.privileged: "
        "privileged containers are not allowed"
    )
    assert [(e.reason, e.type) for e in plan.events] == [("Invalid", "Warning")]
    again = run(job, plan.status, services=())
    assert again.actions == []
    assert again.events == []


def test_unparseable_job_fails_with_the_field() -> None:
    error = InvalidResourceError("LMTrainingJob/tiny-lm", ["spec.replicas: must be >= 1 (got 0)"])
    plan = run(error, {}, services=())
    assert plan.actions == []
    assert condition(plan, "Failed")["message"] == "spec.replicas: must be >= 1 (got 0)"
    assert "startTime" not in plan.status


def test_a_job_invalid_from_the_start_is_rechecked_after_a_fix() -> None:
    error = InvalidResourceError("LMTrainingJob/tiny-lm", ["spec.replicas: must be >= 1 (got 0)"])
    failed = run(error, {}, services=())
    fixed = run(make_job(), failed.status, services=(), ref=job_ref("tiny-lm", "ns", "job-uid", 2))
    assert kinds_of(fixed.actions) == [CreateService]
    assert condition(fixed, "Failed")["status"] == "False"
    assert fixed.status["phase"] == "Pending"
    assert "completionTime" not in fixed.status


# -- observation --------------------------------------------------------------------------


def test_metrics_become_status() -> None:
    metrics = WorkerMetrics(
        step=42,
        loss=2.5,
        tokens_per_second=1234.5,
        world_size=2,
        rank=0,
        last_checkpoint_step=40,
        last_checkpoint_time=NOW.timestamp(),
    )
    plan = run(pods=running(), metrics=metrics)
    assert plan.status["step"] == 42
    assert plan.status["loss"] == 2.5
    assert plan.status["tokensPerSecond"] == 1234.5
    assert plan.status["worldSize"] == 2
    assert plan.status["lastCheckpoint"] == {"step": 40, "time": "2025-01-01T12:00:00Z"}


def test_observe_pod_and_service_from_manifests() -> None:
    pod = {
        "metadata": {
            "name": "tiny-lm-worker-1",
            "uid": "u",
            "labels": {"elasticlm.io/role": "worker", "elasticlm.io/index": "1"},
            "deletionTimestamp": "2025-01-01T00:00:00Z",
        },
        "status": {
            "phase": "Failed",
            "podIP": "127.10.0.3",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {
                    "name": "worker",
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 3, "message": "bad data"}},
                }
            ],
        },
    }
    assert observe_job_pod(pod) == ObservedPod(
        name="tiny-lm-worker-1",
        uid="u",
        role="worker",
        index=1,
        phase="Failed",
        ready=False,
        deleting=True,
        exit_code=3,
        termination_message="bad data",
        ip="127.10.0.3",
    )
    service = {"metadata": {"name": "s"}, "spec": {"clusterIP": "127.96.0.1"}}
    assert observe_service(service) == ObservedService("s", "127.96.0.1")
    assert observe_service({"metadata": {"name": "s"}, "spec": {}}).cluster_ip is None


def test_accepted_but_unimplemented_settings_are_said_once_per_generation() -> None:
    job = make_job(autoscaling={"policy": "Throughput"}, runPolicy={"scheduling": {"gang": True}})
    plan = run(job, {})
    notes = [e.message for e in plan.events if e.reason == "NotImplemented"]
    assert len(notes) == 1  # autoscaling is implemented: no note for it
    assert "spec.runPolicy.scheduling.gang" in notes[0]
    assert all(e.type == "Warning" for e in plan.events if e.reason == "NotImplemented")
    again = run(job, plan.status)
    assert not [e for e in again.events if e.reason == "NotImplemented"]
    assert not [e for e in run(make_job(), {}).events if e.reason == "NotImplemented"]


# -- validation loss ----------------------------------------------------------------------


def test_validation_loss_and_its_history_become_status() -> None:
    job = make_job()
    status = settle(job, running()).status
    seen = [(None, None), (20, 3.5), (20, 3.5), (40, 3.0), (30, 9.9), (60, 2.75)]
    for step, loss in seen:
        metrics = WorkerMetrics(step=61, loss=2.0, validation_loss=loss, validation_step=step)
        status = run(job, status, running(), metrics=metrics).status
    assert status["validationLoss"] == 2.75
    # Repeated scrapes add nothing; a stale one (step 30 after 40) is ignored.
    assert status["validationHistory"] == [
        {"step": 20, "loss": 3.5},
        {"step": 40, "loss": 3.0},
        {"step": 60, "loss": 2.75},
    ]


def test_final_validation_loss_from_the_completion_report_outlives_the_pods() -> None:
    job = make_job()
    status = settle(job, running()).status
    metrics = WorkerMetrics(step=250, validation_loss=3.0, validation_step=200)
    status = run(job, status, running(), metrics=metrics).status
    report = json.dumps({"completed": True, "step": 300, "loss": 2.2, "validationLoss": 2.5})
    done = worker(0, "Succeeded", exit_code=0, message=report)
    plan = run(job, status, [RDZV, done, worker(1)])
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["validationLoss"] == 2.5
    assert plan.status["validationHistory"][-1] == {"step": 300, "loss": 2.5}
    # Once the pods are gone, the figures stay.
    gone = run(job, plan.status, []).status
    assert gone["validationLoss"] == 2.5
    assert gone["validationHistory"] == plan.status["validationHistory"]


def test_validation_history_is_bounded_and_spans_the_run() -> None:
    history: list[dict[str, Any]] = []
    for step in range(10, 2010, 10):
        history = record_validation(history, step, 1000.0 / step, limit=16)
        assert len(history) <= 16
    assert history[0]["step"] == 10  # the start of the run is still there
    assert history[-1] == {"step": 2000, "loss": 0.5}
    steps = [p["step"] for p in history]
    assert steps == sorted(steps)
    assert len(set(steps)) == len(steps)
    # A measurement at the newest step replaces it; an older one changes nothing.
    assert record_validation(history, 2000, 0.4)[-1] == {"step": 2000, "loss": 0.4}
    assert record_validation(history, 1500, 0.1) == history


def test_held_out_losses_and_precision_reach_the_status() -> None:
    job = make_job()
    status = settle(job, running()).status
    reason = "auto chose bf16: this CPU computes bf16 natively (avx512_bf16)"
    metrics = WorkerMetrics(
        step=5,
        world_size=2,
        initial_validation_loss=3.1,
        validation_loss=2.9,
        validation_step=5,
        precision=("auto", "bf16", reason),
    )
    plan = run(job, status, running(), metrics=metrics)
    assert plan.status["initialValidationLoss"] == 3.1
    assert plan.status["validationLoss"] == 2.9
    assert plan.status["precision"] == {"requested": "auto", "chosen": "bf16", "reason": reason}
    # The final figures come with the completion report, however short the run.
    report = {
        "completed": True,
        "step": 300,
        "loss": 2.5,
        "validationLoss": 2.7,
        "initialValidationLoss": 3.1,
        "precision": {"requested": "auto", "chosen": "bf16", "reason": reason},
    }
    done = worker(0, "Succeeded", exit_code=0, message=json.dumps(report))
    final = run(job, plan.status, [RDZV, done, worker(1)])
    assert final.status["phase"] == "Succeeded"
    assert (final.status["validationLoss"], final.status["initialValidationLoss"]) == (2.7, 3.1)
    assert final.status["precision"]["chosen"] == "bf16"
