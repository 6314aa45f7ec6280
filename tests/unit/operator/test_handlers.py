"""reconcile_job, the handlers' one function, against an in-memory stand-in for kube.py."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from lmoperator.api import InvalidResourceError, LMTrainingJob
from lmoperator.handlers.trainingjob import parse_job, reconcile_job, status_patch
from lmoperator.kube import KubeError
from tests.unit.operator.helpers import job_doc

NOW = datetime(2025, 1, 1, tzinfo=UTC)
LOG = logging.getLogger("test")


class FakeKube:
    """Just enough of lmoperator.kube.Kube: objects in dicts, calls recorded in order."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job: dict[str, Any] | None = job
        self.pods: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.fail_on: str | None = None

    def _record(self, call: str) -> None:
        self.calls.append(call)
        if self.fail_on and call.startswith(self.fail_on):
            raise KubeError(call, 500, "boom")

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.job)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self.pods.values())

    def list_services(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self.services.values())

    def create_service(self, namespace: str, manifest: dict[str, Any]) -> bool:
        self._record(f"create service {manifest['metadata']['name']}")
        service = copy.deepcopy(manifest)
        service["spec"]["clusterIP"] = "127.96.0.1"
        self.services[manifest["metadata"]["name"]] = service
        return True

    def create_pod(self, namespace: str, manifest: dict[str, Any]) -> bool:
        self._record(f"create pod {manifest['metadata']['name']}")
        pod = copy.deepcopy(manifest)
        pod["metadata"]["uid"] = f"uid-{len(self.pods)}"
        pod["status"] = {"phase": "Pending"}
        self.pods[manifest["metadata"]["name"]] = pod
        return True

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> bool:
        self._record(f"delete pod {name}")
        return self.pods.pop(name, None) is not None

    def patch_job_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._record("patch status")
        assert self.job is not None
        status = self.job.setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value

    def delete_job(self, namespace: str, name: str) -> None:
        self._record("delete job")

    def create_event(self, involved: Any, reason: str, message: str, type_: str = "Normal") -> None:
        self.events.append((reason, type_))


def stored_job(**spec: Any) -> dict[str, Any]:
    doc = job_doc(**spec)
    doc["metadata"].update({"uid": "job-uid", "generation": 1, "resourceVersion": "5"})
    doc["status"] = {"kopf": {"progress": {}}}  # whatever else lives in status is ignored
    return doc


def reconcile(kube: FakeKube) -> Any:
    return reconcile_job(kube, "ns", "tiny-lm", LOG, now=lambda: NOW, scrape=lambda ips: None)  # type: ignore[arg-type]


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


def test_first_pass_creates_everything_status_first() -> None:
    kube = FakeKube(stored_job())
    plan = reconcile(kube)
    assert plan is not None
    assert kube.calls == [
        "patch status",
        "create service tiny-lm-rdzv",
        # a second pass at once, with the new Service's cluster IP (the status is unchanged)
        "create pod tiny-lm-rdzv",
        "create pod tiny-lm-worker-0",
        "create pod tiny-lm-worker-1",
    ]
    assert kube.job is not None
    assert kube.job["status"]["phase"] == "Pending"
    assert ("SuccessfulCreatePod", "Normal") in kube.events
    # The next pass sees the pods and records them; then nothing changes, nothing is written.
    kube.calls.clear()
    reconcile(kube)
    assert kube.calls == ["patch status"]
    assert kube.job["status"]["replicas"] == 2
    kube.calls.clear()
    reconcile(kube)
    assert kube.calls == []


def test_children_of_others_are_never_touched() -> None:
    kube = FakeKube(stored_job(replicas=1))
    stranger = {
        "metadata": {
            "name": "tiny-lm-worker-5",
            "uid": "x",
            "labels": {"elasticlm.io/job": "tiny-lm", "elasticlm.io/role": "worker",
                       "elasticlm.io/index": "5"},
            "ownerReferences": [{"uid": "someone-else", "controller": True}],
        },
        "status": {"phase": "Running"},
    }  # fmt: skip
    kube.pods["tiny-lm-worker-5"] = stranger
    reconcile(kube)
    assert "delete pod tiny-lm-worker-5" not in kube.calls


def test_api_errors_become_temporary_errors() -> None:
    kube = FakeKube(stored_job())
    kube.fail_on = "create service"
    with pytest.raises(kopf.TemporaryError):
        reconcile(kube)


def test_deleted_or_deleting_jobs_are_left_alone() -> None:
    kube = FakeKube(stored_job())
    assert kube.job is not None
    kube.job["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    assert reconcile(kube) is None
    kube.job = None
    assert reconcile(kube) is None
    assert kube.calls == []


def test_invalid_spec_is_reported_not_raised() -> None:
    doc = stored_job()
    doc["spec"]["replicas"] = 0
    kube = FakeKube(doc)
    plan = reconcile(kube)
    assert plan is not None
    assert plan.status["phase"] == "Failed"
    assert kube.calls == ["patch status"]
    assert ("Invalid", "Warning") in kube.events
