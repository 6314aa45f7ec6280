"""reconcile_job, the handlers' one pass, against an in-memory KubeApi and kopf-like indexes.

`FakeCluster` holds the objects and records every API call; `indexes()` is what kopf's
watches would have indexed from them by now, so a test decides when "the watch event
arrives" by rebuilding the indexes (or not).
"""

from __future__ import annotations

import base64
import copy
import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from lmoperator.api import InvalidResourceError, LMTrainingJob, kinds
from lmoperator.handlers import common, trainingjob
from lmoperator.handlers.children import NETWORK_POLICIES_INDEX, PODS_INDEX, SERVICES_INDEX
from lmoperator.handlers.trainingjob import JOBS_INDEX, parse_job, reconcile_job
from lmoperator.kube import KubeApi, KubeError, Subresource
from lmoperator.reconcile.children import PatchObject, Plan, observe_object
from lmoperator.reconcile.status import PROGRESS_WRITE_SECONDS, should_write, status_patch
from lmoperator.reconcile.trainingjob import PROGRESS_FIELDS, job_ref
from lmoperator.worker_metrics import WorkerMetrics
from tests.unit.operator.helpers import job_doc

NOW = datetime(2025, 1, 1, tzinfo=UTC)
LOG = logging.getLogger("test")
KEY = ("ns", "LMTrainingJob", "tiny-lm")


class FakeCluster:
    """Just enough of an API server: objects in dicts, calls recorded in order."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job: dict[str, Any] | None = job
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (plural, name)
        self.calls: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.fail_on: str | None = None
        self._uids = iter(range(1000))

    def _record(self, call: str) -> None:
        self.calls.append(call)
        if self.fail_on and call.startswith(self.fail_on):
            raise KubeError(call, 500, "boom")

    # -- KubeApi --------------------------------------------------------------------

    def get(self, kind: kinds.ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        self._record(f"get {kind.singular} {name}")
        return copy.deepcopy(self.objects.get((kind.plural, name)))

    def list(self, kind: kinds.ResourceKind, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._record(f"list {kind.plural}")
        return [copy.deepcopy(o) for (p, _), o in self.objects.items() if p == kind.plural]

    def create(
        self, kind: kinds.ResourceKind, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        name = manifest["metadata"]["name"]
        self._record(f"create {kind.singular} {name}")
        if (kind.plural, name) in self.objects:
            return None
        created = copy.deepcopy(dict(manifest))
        created["metadata"]["uid"] = f"uid-{next(self._uids)}"
        if kind == kinds.K8S_SERVICE:
            created["spec"]["clusterIP"] = "127.96.0.1"
        if kind == kinds.POD:
            created["status"] = {"phase": "Pending"}
        self.objects[(kind.plural, name)] = created
        return copy.deepcopy(created)

    def patch(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: Subresource = "",
    ) -> dict[str, Any] | None:
        self._record(f"patch {subresource or kind.singular}")
        if subresource != "status":
            target = self.objects.get((kind.plural, name))
            if target is None:
                return None
            target.setdefault("patched", []).append((subresource, dict(patch)))
            return copy.deepcopy(target)
        assert kind == kinds.TRAINING_JOB
        if self.job is None:
            return None
        status = self.job.setdefault("status", {})
        for key, value in patch["status"].items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        return copy.deepcopy(self.job)

    def delete(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        grace_seconds: int | None = None,
    ) -> bool:
        self._record(f"delete {kind.singular} {name}")
        if kind == kinds.TRAINING_JOB:
            gone, self.job = self.job is not None, None
            return gone
        return self.objects.pop((kind.plural, name), None) is not None

    def create_event(
        self, involved: Mapping[str, str], reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self.events.append((reason, type_))

    # -- what kopf's watches would show -------------------------------------------------

    def indexes(self) -> dict[str, Any]:
        children: dict[str, dict[Any, list[dict[str, Any]]]] = {
            PODS_INDEX: {},
            SERVICES_INDEX: {},
            NETWORK_POLICIES_INDEX: {},
        }
        by_plural = {"pods": PODS_INDEX, "networkpolicies": NETWORK_POLICIES_INDEX}
        for (plural, _), obj in self.objects.items():
            if plural == "secrets":
                continue  # not watched
            index = by_plural.get(plural, SERVICES_INDEX)
            for key, value in common.child_index_entry("ns", obj).items():
                children[index].setdefault(key, []).append(copy.deepcopy(value))
        jobs = {KEY: [copy.deepcopy(self.job)]} if self.job is not None else {}
        return {JOBS_INDEX: jobs, **children}

    def set_pod(self, name: str, **status: Any) -> None:
        self.objects[("pods", name)]["status"].update(status)


def _typed(fake: FakeCluster) -> KubeApi:
    return fake  # the fake satisfies the Protocol: mypy checks it here


@pytest.fixture(autouse=True)
def fresh_memory() -> Iterator[None]:
    yield
    common.STATES.forget("job-uid")


def stored_job(**spec: Any) -> dict[str, Any]:
    doc = job_doc(**spec)
    doc["metadata"].update({"uid": "job-uid", "generation": 1, "resourceVersion": "5"})
    doc["status"] = {"kopf": {"progress": {}}}  # whatever else lives in status is ignored
    return doc


def reconcile(
    fake: FakeCluster,
    indexes: dict[str, Any] | None = None,
    now: datetime = NOW,
    metrics: WorkerMetrics | None = None,
) -> Plan | None:
    return reconcile_job(
        _typed(fake),
        "ns",
        "tiny-lm",
        indexes if indexes is not None else fake.indexes(),
        LOG,
        now=lambda: now,
        scraped=metrics is not None,
        metrics=metrics,
    )


def test_parse_job_ignores_status_and_server_fields() -> None:
    doc = stored_job()
    doc["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    assert isinstance(parse_job(doc), LMTrainingJob)
    doc["spec"]["replicas"] = 0
    error = parse_job(doc)
    assert isinstance(error, InvalidResourceError)
    assert any(p.startswith("spec.replicas") for p in error.problems)


def test_status_patch_sets_changes_and_removes_fields() -> None:
    old = {"phase": "Running", "step": 3, "completionTime": "x"}
    new = {"phase": "Running", "step": 4}
    assert status_patch(old, new) == {"step": 4, "completionTime": None}
    assert status_patch(new, new) == {}


def test_progress_alone_waits_other_changes_do_not() -> None:
    progress = {"step": 4, "loss": 2.5}
    assert should_write(progress, PROGRESS_FIELDS, None)  # never written: at once
    assert not should_write(progress, PROGRESS_FIELDS, PROGRESS_WRITE_SECONDS / 2)
    assert should_write(progress, PROGRESS_FIELDS, PROGRESS_WRITE_SECONDS)
    assert should_write({**progress, "phase": "Scaling"}, PROGRESS_FIELDS, 0.0)
    assert not should_write({}, PROGRESS_FIELDS, None)


def test_first_passes_create_everything_and_make_no_reads() -> None:
    fake = FakeCluster(stored_job())
    plan = reconcile(fake)
    assert plan is not None
    # No failure to count: the children first, so that they need not wait for the write.
    assert fake.calls == ["create service tiny-lm-rdzv", "patch status"]
    assert fake.job is not None
    assert fake.job["status"]["phase"] == "Pending"
    # The Service's event runs the next pass: its cluster IP lets the pods be made.
    reconcile(fake)
    assert fake.calls[2:] == [
        "create networkpolicy tiny-lm-pods",
        "create secret tiny-lm-rdzv-auth",
        "create pod tiny-lm-rdzv",
        "create pod tiny-lm-worker-0",
        "create pod tiny-lm-worker-1",
    ]
    assert ("SuccessfulCreatePod", "Normal") in fake.events
    # The pods' events: the pass records them; then nothing changes, nothing is written.
    fake.calls.clear()
    reconcile(fake)
    assert fake.calls == ["patch status"]
    assert fake.job["status"]["replicas"] == 2
    fake.calls.clear()
    reconcile(fake)
    assert fake.calls == []
    assert not any(c.startswith(("get", "list")) for c in fake.calls)


def test_children_made_by_a_pass_count_before_their_watch_events_arrive() -> None:
    fake = FakeCluster(stored_job())
    stale = fake.indexes()  # no children: the watch has shown nothing yet
    reconcile(fake, stale)
    reconcile(fake, stale)  # the Service is known from its creation
    fake.calls.clear()
    plan = reconcile(fake, stale)
    assert plan is not None
    assert fake.calls == ["patch status"]  # nothing created twice; replicas recorded
    assert plan.status["replicas"] == 2


def test_a_deleted_child_counts_as_deleting_until_its_event_arrives() -> None:
    fake = FakeCluster(stored_job(replicas=2))
    for _ in range(3):
        reconcile(fake)
    assert fake.job is not None
    fake.job["spec"]["replicas"] = 1
    fake.job["metadata"]["generation"] = 2
    before = fake.indexes()
    reconcile(fake, before)
    assert "delete pod tiny-lm-worker-1" in fake.calls
    fake.calls.clear()
    plan = reconcile(fake, before)  # the index still shows the pod, not deleting
    assert plan is not None
    assert not any(call.startswith("delete") for call in fake.calls)  # not deleted twice
    assert plan.status["replicas"] == 1


def test_children_of_others_are_never_touched() -> None:
    fake = FakeCluster(stored_job(replicas=1))
    fake.objects[("pods", "tiny-lm-worker-5")] = {
        "metadata": {
            "name": "tiny-lm-worker-5",
            "uid": "x",
            "labels": {"elasticlm.io/job": "tiny-lm", "elasticlm.io/role": "worker",
                       "elasticlm.io/index": "5"},
            "ownerReferences": [{"apiVersion": "elasticlm.io/v1alpha1", "kind": "LMTrainingJob",
                                 "name": "tiny-lm", "uid": "someone-else", "controller": True}],
        },
        "status": {"phase": "Running"},
    }  # fmt: skip
    for _ in range(3):
        reconcile(fake)
    assert "delete pod tiny-lm-worker-5" not in fake.calls


def test_api_errors_become_temporary_errors_and_the_next_pass_retries() -> None:
    fake = FakeCluster(stored_job())
    fake.fail_on = "create service"
    with pytest.raises(kopf.TemporaryError):
        reconcile(fake)
    fake.fail_on = None
    reconcile(fake)
    assert ("services", "tiny-lm-rdzv") in fake.objects


def test_deleted_or_deleting_jobs_are_left_alone() -> None:
    fake = FakeCluster(stored_job())
    assert fake.job is not None
    fake.job["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert reconcile(fake) is None
    fake.job = None
    assert reconcile(fake) is None
    assert fake.calls == []


def test_invalid_spec_is_reported_not_raised() -> None:
    doc = stored_job()
    doc["spec"]["replicas"] = 0
    fake = FakeCluster(doc)
    plan = reconcile(fake)
    assert plan is not None
    assert plan.status["phase"] == "Failed"
    assert fake.calls == ["patch status"]
    assert ("Invalid", "Warning") in fake.events


def _running(fake: FakeCluster) -> None:
    for _ in range(3):
        reconcile(fake)
    for name in ("tiny-lm-rdzv", "tiny-lm-worker-0", "tiny-lm-worker-1"):
        fake.set_pod(name, phase="Running", conditions=[{"type": "Ready", "status": "True"}])
    reconcile(fake)


def test_a_counted_failure_is_written_before_the_failed_pod_goes() -> None:
    fake = FakeCluster(stored_job())
    _running(fake)
    fake.calls.clear()
    fake.set_pod(
        "tiny-lm-worker-1",
        phase="Failed",
        containerStatuses=[{"name": "worker", "state": {"terminated": {"exitCode": 137}}}],
    )
    reconcile(fake)
    assert fake.calls[:2] == ["patch status", "delete pod tiny-lm-worker-1"]
    assert fake.job is not None
    assert fake.job["status"]["restarts"] == 1


def test_training_progress_is_written_at_most_every_few_seconds() -> None:
    fake = FakeCluster(stored_job())
    _running(fake)
    fake.calls.clear()
    reconcile(fake, metrics=WorkerMetrics(step=10, loss=3.0, world_size=2, rank=0))
    assert fake.calls == ["patch status"]  # worldSize and phase moved: at once
    reconcile(fake, metrics=WorkerMetrics(step=11, loss=2.9, world_size=2, rank=0))
    assert fake.calls == ["patch status"]  # only progress, just written: it waits
    assert fake.job is not None
    assert fake.job["status"]["step"] == 10
    state = common.STATES.get("job-uid")
    assert state.last_progress_write is not None
    state.last_progress_write -= PROGRESS_WRITE_SECONDS
    reconcile(fake, metrics=WorkerMetrics(step=12, loss=2.8, world_size=2, rank=0))
    assert fake.calls == ["patch status", "patch status"]
    assert fake.job["status"]["step"] == 12


def _finish(fake: FakeCluster) -> Plan | None:
    _running(fake)
    for name in ("tiny-lm-worker-0", "tiny-lm-worker-1"):
        fake.set_pod(
            name,
            phase="Succeeded",
            conditions=[],
            containerStatuses=[
                {
                    "name": "worker",
                    "state": {
                        "terminated": {"exitCode": 0, "message": '{"completed": true, "step": 300}'}
                    },
                }
            ],
        )
    return reconcile(fake)


def test_a_finished_job_costs_no_requests() -> None:
    fake = FakeCluster(stored_job())
    plan = _finish(fake)
    assert plan is not None
    assert plan.status["phase"] == "Succeeded"
    fake.calls.clear()
    for later in (1, 60, 3600):
        reconcile(fake, now=NOW + timedelta(seconds=later))
    assert fake.calls == []


def test_the_ttl_deletes_the_job_once_due() -> None:
    fake = FakeCluster(stored_job(runPolicy={"ttlSecondsAfterFinished": 30}))
    _finish(fake)
    fake.calls.clear()
    reconcile(fake, now=NOW + timedelta(seconds=29))
    assert fake.calls == []
    reconcile(fake, now=NOW + timedelta(seconds=30))
    assert fake.calls == ["delete lmtrainingjob tiny-lm"]


def test_a_pass_waiting_for_the_lock_reads_what_the_last_one_wrote() -> None:
    fake = FakeCluster(stored_job())
    stale = fake.indexes()  # taken before the first pass wrote its status
    state = common.STATES.get("job-uid")
    with state.lock:
        waiting = threading.Thread(target=reconcile, args=(fake, stale))
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive()  # it waits for the lock, before reading anything
    waiting.join()
    fake.calls.clear()
    reconcile(fake, stale)
    # Created, Pending, the Service: all known from the write, not from `stale`.
    assert "patch status" not in fake.calls


def test_child_events_coalesce_while_a_pass_runs() -> None:
    runs: list[int] = []
    state = common.ObjectState()
    started, release = threading.Event(), threading.Event()

    def slow_pass() -> int:
        runs.append(len(runs))
        if len(runs) == 1:
            started.set()
            release.wait(5)
        return len(runs)

    holder = threading.Thread(target=common.run_exclusive, args=(state, slow_pass, True))
    holder.start()
    assert started.wait(5)
    # Three child events while the pass runs: none blocks, one more pass covers them all.
    for _ in range(3):
        assert common.run_exclusive(state, slow_pass, False) is None
    release.set()
    holder.join(5)
    assert runs == [0, 1]
    assert not state.dirty


def test_the_written_status_is_trusted_only_until_the_watch_shows_it() -> None:
    state = common.ObjectState()
    assert common.current_status(state, {"status": {"phase": "Pending"}}) == {"phase": "Pending"}
    state.status, state.status_written_at = {"phase": "Running"}, 1e18  # just written
    old = {"status": {"phase": "Pending"}}
    assert common.current_status(state, old) == {"phase": "Running"}  # the watch lags
    assert common.current_status(state, {"status": {"phase": "Running"}}) == {"phase": "Running"}
    assert state.status is None  # caught up: the watch's copy from now on
    state.status = {"phase": "Running"}
    state.status_written_at = -common.WRITTEN_STATUS_SECONDS * 2  # long ago
    # Someone else (another operator replica, active meanwhile) wrote since: theirs wins.
    assert common.current_status(state, {"status": {"phase": "Failed"}}) == {"phase": "Failed"}


def test_a_scrape_that_finds_no_rank_0_forgets_the_last_figures() -> None:
    fake = FakeCluster(stored_job())
    _running(fake)
    reconcile(fake, metrics=WorkerMetrics(step=10, world_size=2, rank=0))
    state = common.STATES.get("job-uid")
    assert state.metrics is not None
    reconcile(fake)  # a child's event: the last scrape stays
    assert state.metrics is not None
    reconcile_job(_typed(fake), "ns", "tiny-lm", fake.indexes(), LOG, scraped=True, metrics=None)
    assert state.metrics is None


def test_apply_plan_patches_a_childs_scale_and_posts_the_event() -> None:
    fake = FakeCluster(stored_job())
    fake.objects[("deployments", "server")] = {"metadata": {"name": "server"}}
    ref = job_ref("tiny-lm", "ns", "job-uid", 1)
    plan = Plan()
    plan.actions.append(
        PatchObject(
            kinds.DEPLOYMENT, "server", {"spec": {"replicas": 3}}, "server", "Scale", "scale"
        )
    )
    common.apply_plan(_typed(fake), ref, common.ObjectState(), plan, LOG)
    assert fake.calls == ["patch scale"]
    assert fake.objects[("deployments", "server")]["patched"] == [
        ("scale", {"spec": {"replicas": 3}})
    ]
    assert ("SuccessfulPatchDeployment", "Normal") in fake.events


def test_observe_object_reads_a_deployment() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {
            "name": "server",
            "uid": "d-1",
            "generation": 4,
            "labels": {"elasticlm.io/role": "server"},
            "deletionTimestamp": "2025-01-01T00:00:00Z",
        },
        "spec": {"replicas": 3},
        "status": {
            "observedGeneration": 3,
            "readyReplicas": 2,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }
    seen = observe_object(deployment)
    assert (seen.kind, seen.name, seen.uid, seen.role) == ("Deployment", "server", "d-1", "server")
    assert seen.deleting
    assert (seen.generation, seen.observed_generation) == (4, 3)
    assert (seen.replicas, seen.ready_replicas) == (3, 2)
    assert seen.conditions == {"Available": "True"}


def test_a_scale_up_promotes_the_spare_with_the_secrets_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relabelling first, then one read of the Secret, then the order; a later pass
    repeats the order (the token remembered) until the pod trains."""
    orders: list[tuple[str, bytes, int, int]] = []

    def promote(ip: str, token: bytes, index: int, expected: int) -> str | None:
        orders.append((ip, token, index, expected))
        return None

    monkeypatch.setattr(trainingjob, "promote_spare", promote)
    elastic = {"minReplicas": 1, "maxReplicas": 3, "warmSpares": 1}
    fake = FakeCluster(stored_job(elastic=elastic))
    _running(fake)
    assert ("pods", "tiny-lm-spare-0") in fake.objects
    fake.set_pod(
        "tiny-lm-spare-0",
        phase="Running",
        podIP="127.11.0.1",
        conditions=[{"type": "Ready", "status": "True"}],
    )
    reconcile(fake)
    assert fake.job is not None
    fake.job["spec"]["replicas"] = 3
    fake.job["metadata"]["generation"] = 2
    fake.calls.clear()
    reconcile(fake)
    assert fake.calls[:2] == ["patch pod", "get secret tiny-lm-rdzv-auth"]
    assert "create pod tiny-lm-worker-2" not in fake.calls
    secret = fake.objects[("secrets", "tiny-lm-rdzv-auth")]["data"]["token"]
    assert orders == [("127.11.0.1", base64.b64decode(secret), 2, 3)]
    (_, patch) = fake.objects[("pods", "tiny-lm-spare-0")]["patched"][-1]
    assert patch["metadata"]["labels"] == {"elasticlm.io/role": "worker", "elasticlm.io/index": "2"}
    # The watch shows the relabelled pod, not yet training: the order again, no new read.
    pod = fake.objects[("pods", "tiny-lm-spare-0")]
    pod["metadata"]["labels"].update(patch["metadata"]["labels"])
    pod["metadata"]["annotations"] = patch["metadata"]["annotations"]
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    fake.calls.clear()
    reconcile(fake)
    assert not any(c.startswith("get") for c in fake.calls)
    assert len(orders) == 2
    assert orders[1][2:] == (2, 3)
