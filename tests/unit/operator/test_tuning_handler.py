"""reconcile_search, the LMTuningJob handlers' one pass, against an in-memory KubeApi and
kopf-like indexes (as tests/unit/operator/test_handlers.py does for LMTrainingJob).

`FakeCluster` holds the search and its trial jobs and records every API call;
`indexes()` is what kopf's watches would have indexed by now.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
import yaml

from lmoperator.api import kinds
from lmoperator.handlers import common
from lmoperator.handlers.tuningjob import (
    SEARCHES_INDEX,
    TRIALS_INDEX,
    _on_change,
    parse_search,
    reconcile_search,
)
from lmoperator.kube import KubeApi, KubeError, Subresource
from lmoperator.reconcile.children import Plan

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LOG = logging.getLogger("test")
NAME = "tiny-lm-search"
UID = "search-uid"
EXAMPLE = Path(__file__).resolve().parents[3] / "manifests" / "examples" / "tuning-job.yaml"


class FakeCluster:
    """The search (its status subresource) and LMTrainingJobs; calls recorded in order."""

    def __init__(self, search: dict[str, Any]) -> None:
        self.search: dict[str, Any] | None = search
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.events: list[tuple[str, str, str]] = []
        self.fail_on: str | None = None
        self._uids = iter(range(1000))

    def _record(self, call: str) -> None:
        self.calls.append(call)
        if self.fail_on and call.startswith(self.fail_on):
            raise KubeError(call, 500, "boom")

    def get(self, kind: kinds.ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        self._record(f"get {kind.singular} {name}")
        return copy.deepcopy(self.jobs.get(name))

    def list(self, kind: kinds.ResourceKind, namespace: str, selector: str) -> list[dict[str, Any]]:
        self._record(f"list {kind.plural}")
        return [copy.deepcopy(j) for j in self.jobs.values()]

    def create(
        self, kind: kinds.ResourceKind, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        name = manifest["metadata"]["name"]
        self._record(f"create {kind.singular} {name}")
        assert kind == kinds.TRAINING_JOB
        if name in self.jobs:
            return None
        created = copy.deepcopy(dict(manifest))
        created["metadata"].update(uid=f"uid-{next(self._uids)}", namespace=namespace)
        created["status"] = {}
        self.jobs[name] = created
        return copy.deepcopy(created)

    def patch(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: Subresource = "",
    ) -> dict[str, Any] | None:
        self._record(f"patch {subresource or kind.singular} {name}")
        if subresource == "status":
            assert kind == kinds.TUNING_JOB
            if self.search is None:
                return None
            status = self.search.setdefault("status", {})
            for key, value in patch["status"].items():
                if value is None:
                    status.pop(key, None)
                else:
                    status[key] = value
            return copy.deepcopy(self.search)
        job = self.jobs.get(name)
        if job is None:
            return None
        job.setdefault("patched", []).append((subresource, copy.deepcopy(dict(patch))))
        return copy.deepcopy(job)

    def delete(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        grace_seconds: int | None = None,
    ) -> bool:
        self._record(f"delete {kind.singular} {name}")
        return self.jobs.pop(name, None) is not None

    def create_event(
        self, involved: Mapping[str, str], reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self.events.append((reason, type_, message))

    # -- what kopf's watches would show -------------------------------------------------

    def indexes(self) -> dict[str, Any]:
        trials: dict[Any, list[dict[str, Any]]] = {}
        for job in self.jobs.values():
            for key, value in common.child_index_entry("ns", job).items():
                trials.setdefault(key, []).append(copy.deepcopy(value))
        searches = (
            {("ns", "LMTuningJob", NAME): [copy.deepcopy(self.search)]}
            if self.search is not None
            else {}
        )
        return {SEARCHES_INDEX: searches, TRIALS_INDEX: trials, "logger": LOG}

    def finish(self, name: str, loss: float) -> None:
        """The trial job ends as its status would say (the LMTrainingJob operator's part)."""
        self.jobs[name]["status"] = {
            "phase": "Succeeded",
            "validationLoss": loss,
            "validationHistory": [{"step": 20, "loss": loss + 1}, {"step": 60, "loss": loss}],
        }


def _typed(fake: FakeCluster) -> KubeApi:
    return fake  # the fake satisfies the Protocol: mypy checks it here


@pytest.fixture(autouse=True)
def fresh_memory() -> Iterator[None]:
    yield
    common.STATES.forget(UID)


def stored_search(**spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    doc["spec"].update(spec)
    doc["metadata"].update({"namespace": "ns", "uid": UID, "generation": 1, "resourceVersion": "3"})
    return doc


def reconcile(fake: FakeCluster, indexes: dict[str, Any] | None = None) -> Plan | None:
    return reconcile_search(
        _typed(fake), "ns", NAME, indexes or fake.indexes(), LOG, now=lambda: NOW
    )


def test_the_first_pass_writes_the_trials_then_creates_their_jobs() -> None:
    fake = FakeCluster(stored_search())
    plan = reconcile(fake)
    assert plan is not None
    # Status first: a restarted operator knows the trials even if the creates fail.
    assert fake.calls == [
        f"patch status {NAME}",
        f"create lmtrainingjob {NAME}-t0",
        f"create lmtrainingjob {NAME}-t1",
    ]
    assert fake.search is not None
    trials = fake.search["status"]["trials"]
    assert [t["name"] for t in trials] == [f"{NAME}-t0", f"{NAME}-t1"]
    assert fake.search["status"]["phase"] == "Running"
    t0 = fake.jobs[f"{NAME}-t0"]
    [owner] = t0["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("LMTuningJob", UID)
    assert t0["metadata"]["labels"]["elasticlm.io/tuning-job"] == NAME
    assert [r for r, _, _ in fake.events].count("TrialStarted") == 2


def test_passes_before_the_watch_shows_the_jobs_create_nothing_twice() -> None:
    fake = FakeCluster(stored_search())
    stale = fake.indexes()  # neither the status nor the jobs seen by the watch yet
    reconcile(fake, stale)
    fake.calls.clear()
    reconcile(fake, stale)
    assert not [c for c in fake.calls if c.startswith("create")]
    assert len(fake.jobs) == 2


def test_finished_trials_are_recorded_and_the_next_ones_started() -> None:
    fake = FakeCluster(stored_search())
    reconcile(fake)
    fake.finish(f"{NAME}-t0", 2.5)
    fake.calls.clear()
    reconcile(fake)
    assert fake.search is not None
    states = [t["state"] for t in fake.search["status"]["trials"]]
    assert states == ["Succeeded", "Running", "Running"]
    assert f"create lmtrainingjob {NAME}-t2" in fake.calls
    assert fake.search["status"]["bestTrial"]["name"] == f"{NAME}-t0"
    assert ("TrialSucceeded", "Normal") in [(r, t) for r, t, _ in fake.events]


def test_the_search_runs_to_succeeded_through_the_handler() -> None:
    fake = FakeCluster(stored_search(budget={"maxTrials": 3, "parallelTrials": 2}))
    reconcile(fake)
    for _ in range(4):
        for i, name in enumerate(sorted(fake.jobs)):
            if not fake.jobs[name]["status"]:
                fake.finish(name, 3.0 - 0.1 * i)
        reconcile(fake)
    assert fake.search is not None
    status = fake.search["status"]
    assert status["phase"] == "Succeeded"
    assert status["bestTrial"]["name"] == f"{NAME}-t2"
    assert len(fake.jobs) == 3
    fake.calls.clear()
    reconcile(fake)
    assert fake.calls == []  # a finished search costs no requests


def test_a_lost_memory_and_status_adopt_the_jobs_without_duplicates() -> None:
    fake = FakeCluster(stored_search())
    reconcile(fake)
    assert fake.search is not None
    fake.search["status"] = {}  # as if the status write had been lost
    common.STATES.forget(UID)  # and the operator restarted
    fake.calls.clear()
    reconcile(fake)
    assert not [c for c in fake.calls if c.startswith("create")]
    assert [t["name"] for t in fake.search["status"]["trials"]] == [f"{NAME}-t0", f"{NAME}-t1"]


def test_api_errors_become_temporary_errors_and_the_next_pass_retries() -> None:
    fake = FakeCluster(stored_search())
    fake.fail_on = "create lmtrainingjob"
    with pytest.raises(kopf.TemporaryError):
        reconcile(fake)
    fake.fail_on = None
    reconcile(fake)
    assert sorted(fake.jobs) == [f"{NAME}-t0", f"{NAME}-t1"]


def test_an_invalid_search_is_failed_and_refused_permanently() -> None:
    bad = stored_search()
    bad["spec"]["parameters"][0]["path"] = "training.learnigRate"
    assert not hasattr(parse_search(bad), "spec")
    fake = FakeCluster(bad)
    with pytest.raises(kopf.PermanentError, match="learnigRate"):
        _on_change(SimpleNamespace(kube=_typed(fake)), "ns", NAME, fake.indexes())
    assert fake.search is not None
    status = fake.search["status"]
    assert status["phase"] == "Failed"
    assert fake.jobs == {}
    [failed] = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "Invalid"


def test_a_deleting_or_deleted_search_is_left_alone() -> None:
    fake = FakeCluster(stored_search())
    assert fake.search is not None
    fake.search["metadata"]["deletionTimestamp"] = "2026-12-04T12:00:00Z"
    assert reconcile(fake) is None
    fake.search = None
    assert reconcile(fake) is None
    assert fake.calls == []
