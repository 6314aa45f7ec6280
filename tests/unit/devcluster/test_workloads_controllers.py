"""The ReplicaSet and Deployment controllers over an in-process Cluster, step by step:
no HTTP and no kubelet. The test plays the kubelet (it marks pods ready) and the clock,
so every intermediate state of a rollout can be checked."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from devcluster.apiserver.cluster import Cluster
from devcluster.apiserver.options import Ctx, DeleteOptions
from devcluster.gc import Controllers
from devcluster.workloads.loop import WorkloadControllers
from devcluster.workloads.pods import DELETION_COST

Obj = dict[str, Any]
NS = "default"
T0 = 1_700_000_000.0


class Harness:
    """A cluster whose pods become ready when the test says so, at the test's time."""

    def __init__(self, simulate: bool = True) -> None:
        self.cluster = Cluster(None, simulate=simulate)
        self.gc = Controllers(self.cluster)
        self.gc.attach()
        self.now = T0
        self.workloads = WorkloadControllers(self.cluster, clock=lambda: self.now)
        self.workloads.attach()
        self.history: list[dict[str, int]] = []  # sizes() after each change of them
        self.cluster.store.add_listener(self._record)

    def _record(self, event: Any) -> None:
        if event.gr == ("apps", "replicasets") and event.type != "DELETED":
            now = sizes(self)
            if not self.history or self.history[-1] != now:
                self.history.append(now)

    def rt(self, group: str, plural: str) -> Any:
        return self.cluster.rt(group, "v1", plural)

    def settle(self) -> None:
        for _ in range(100):
            self.workloads.run_pending()
            self.gc.run_pending()
            if not (self.workloads._dirty_sets or self.workloads._dirty_deployments):
                return
        raise AssertionError("the controllers did not settle")

    def create(self, plural: str, body: Obj) -> Obj:
        group = "" if plural == "pods" else "apps"
        created = self.cluster.create(self.rt(group, plural), NS, copy.deepcopy(body), Ctx())
        self.settle()
        return created

    def change(self, plural: str, name: str, edit: Callable[[Obj], None]) -> None:
        group = "" if plural == "pods" else "apps"
        self.cluster.mutate(self.rt(group, plural), NS, name, edit)
        self.settle()

    def get(self, plural: str, name: str) -> Obj:
        group = "" if plural == "pods" else "apps"
        return self.cluster.get(self.rt(group, plural), NS, name)

    def replica_sets(self) -> list[Obj]:
        return self.cluster.store.items(("apps", "replicasets"), NS)

    def pods(self, *, terminating: bool = False) -> list[Obj]:
        return [
            p
            for p in self.cluster.store.items(("", "pods"), NS)
            if terminating or not p["metadata"].get("deletionTimestamp")
        ]

    def make_ready(self, names: list[str] | None = None) -> None:
        """The kubelet's part: Running and Ready, as of now."""
        moment = datetime.fromtimestamp(self.now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def ready(pod: Obj) -> None:
            pod["status"]["phase"] = "Running"
            pod["status"]["conditions"] = [
                {"type": "Ready", "status": "True", "lastTransitionTime": moment}
            ]

        for pod in self.pods():
            if (names is None or pod["metadata"]["name"] in names) and pod["status"].get(
                "phase"
            ) != "Running":
                self.cluster.mutate(
                    self.rt("", "pods"), NS, pod["metadata"]["name"], ready, "status"
                )
        self.settle()

    def tick(self, seconds: float) -> None:
        """Time passes; the passes that asked to come back by then run."""
        self.now += seconds
        self.workloads.resync()
        self.settle()

    def finish_terminating(self) -> None:
        """The kubelet's part: terminating pods' processes exit."""
        for pod in self.pods(terminating=True):
            if pod["metadata"].get("deletionTimestamp"):
                self.cluster.delete(
                    self.rt("", "pods"), NS, pod["metadata"]["name"], DeleteOptions(grace_period=0)
                )
        self.settle()


@pytest.fixture
def h() -> Harness:
    return Harness()


def deployment(name: str = "web", replicas: int = 3, image: str = "v1", **spec: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
            **spec,
        },
    }


def set_image(image: str) -> Callable[[Obj], None]:
    def edit(d: Obj) -> None:
        d["spec"]["template"]["spec"]["containers"][0]["image"] = image

    return edit


def sizes(h: Harness) -> dict[str, int]:
    """Sizes by image, for readable assertions."""
    return {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
        for rs in h.replica_sets()
    }


def roll_until_done(h: Harness, name: str = "web", limit: int = 30) -> None:
    for _ in range(limit):
        status = h.get("deployments", name)["status"]
        replicas = h.get("deployments", name)["spec"]["replicas"]
        if (
            status.get("updatedReplicas", 0)
            == replicas
            == status.get("availableReplicas", 0)
            == (status.get("replicas", 0))
        ):
            return
        h.make_ready()
    raise AssertionError(f"the rollout did not finish: {h.history}")


def condition(obj: Obj, kind: str) -> tuple[str, str]:
    for c in obj["status"].get("conditions", []):
        if c["type"] == kind:
            return c["status"], c["reason"]
    raise AssertionError(f"no {kind} condition in {obj['status']}")


# --------------------------------------------------------------------------- ReplicaSets


def test_replica_set_makes_and_counts_its_pods(h: Harness) -> None:
    body = deployment("solo", 2)
    body["kind"] = "ReplicaSet"
    rs = h.create("replicasets", body)
    pods = h.pods()
    assert len(pods) == 2
    for pod in pods:
        assert pod["metadata"]["name"].startswith("solo-")
        (owner,) = pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"], owner["blockOwnerDeletion"]) == (
            "ReplicaSet", rs["metadata"]["uid"], True, True,
        )  # fmt: skip
    status = h.get("replicasets", "solo")["status"]
    assert status == {"replicas": 2, "fullyLabeledReplicas": 2, "observedGeneration": 1}
    h.make_ready()
    assert h.get("replicasets", "solo")["status"]["availableReplicas"] == 2


def test_replica_set_scale_down_picks_its_victims(h: Harness) -> None:
    body = deployment("solo", 4)
    body["kind"] = "ReplicaSet"
    h.create("replicasets", body)
    names = sorted(p["metadata"]["name"] for p in h.pods())
    h.make_ready(names[:3])  # names[3] stays Pending: it goes first
    costs = {names[0]: "100", names[1]: "-1", names[2]: "5"}

    def annotate(cost: str) -> Callable[[Obj], None]:
        return lambda pod: (
            pod["metadata"].setdefault("annotations", {}).update({DELETION_COST: cost})
        )

    for name, cost in costs.items():
        h.change("pods", name, annotate(cost))

    def scale(n: int) -> Callable[[Obj], None]:
        return lambda rs: rs["spec"].update(replicas=n)

    h.change("replicasets", "solo", scale(3))
    assert {p["metadata"]["name"] for p in h.pods()} == set(names[:3])  # the pending one
    h.change("replicasets", "solo", scale(1))
    assert [p["metadata"]["name"] for p in h.pods()] == [names[0]]  # the dearest stays


def test_replica_set_adopts_orphans_and_releases_strays(h: Harness) -> None:
    body = deployment("solo", 1)
    body["kind"] = "ReplicaSet"
    rs = h.create("replicasets", body)
    orphan = {
        "metadata": {"name": "orphan", "labels": {"app": "solo"}},
        "spec": {"containers": [{"name": "main", "image": "v1"}]},
    }
    h.create("pods", orphan)
    owned = [p for p in h.pods() if p["metadata"].get("ownerReferences")]
    assert len(h.pods()) == 1  # adopted, then one of the two went
    assert owned
    assert owned[0]["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    survivor = h.pods()[0]["metadata"]["name"]
    h.change("pods", survivor, lambda p: p["metadata"]["labels"].update(app="other"))
    released = h.get("pods", survivor)
    assert "ownerReferences" not in released["metadata"]
    assert len(h.pods()) == 2  # a replacement for the released pod


# --------------------------------------------------------------------------- Deployments


def test_rolling_update_with_surge_and_no_unavailability(h: Harness) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    h.create("deployments", deployment(replicas=3, strategy=strategy))
    h.make_ready()
    assert condition(h.get("deployments", "web"), "Progressing") == (
        "True",
        "NewReplicaSetAvailable",
    )
    h.history.clear()
    h.change("deployments", "web", set_image("v2"))
    roll_until_done(h)
    # one pod at a time, never more than replicas + maxSurge, never fewer available
    steps = [(step["v1"], step.get("v2", 0)) for step in h.history]
    assert steps == [(3, 1), (2, 1), (2, 2), (1, 2), (1, 3), (0, 3)]
    d = h.get("deployments", "web")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"] == 2


def test_rolling_update_with_unavailability_and_no_surge(h: Harness) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    h.create("deployments", deployment(replicas=3, strategy=strategy))
    h.make_ready()
    h.history.clear()
    h.change("deployments", "web", set_image("v2"))
    assert sizes(h) == {"v1": 2, "v2": 1}  # down first, then up into the room
    roll_until_done(h)
    steps = [(step["v1"], step.get("v2", 0)) for step in h.history]
    assert steps == [(3, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2), (0, 3)]


def test_default_strategy_rounds_surge_up_and_unavailability_down(h: Harness) -> None:
    h.create("deployments", deployment(replicas=2))
    h.make_ready()
    h.change("deployments", "web", set_image("v2"))
    # 25% of 2: surge 0.5 rounds up to 1, unavailability rounds down to 0
    assert sizes(h) == {"v1": 2, "v2": 1}


def test_recreate_stops_every_old_pod_first() -> None:
    h = Harness(simulate=False)  # pods terminate gracefully, as with the process kubelet
    h.create("deployments", deployment(replicas=2, strategy={"type": "Recreate"}))
    h.make_ready()
    h.change("deployments", "web", set_image("v2"))
    assert sizes(h) == {"v1": 0}  # no new ReplicaSet while old pods terminate
    assert len(h.pods(terminating=True)) == 2
    h.finish_terminating()
    assert sizes(h) == {"v1": 0, "v2": 2}
    roll_until_done(h)


def test_min_ready_seconds_holds_availability_back(h: Harness) -> None:
    h.create("deployments", deployment(replicas=2, minReadySeconds=10))
    h.make_ready()
    d = h.get("deployments", "web")
    assert d["status"]["readyReplicas"] == 2
    assert d["status"].get("availableReplicas", 0) == 0
    assert condition(d, "Available") == ("False", "MinimumReplicasUnavailable")
    h.tick(11)
    d = h.get("deployments", "web")
    assert d["status"]["availableReplicas"] == 2
    assert condition(d, "Available") == ("True", "MinimumReplicasAvailable")
    assert (
        h.get("replicasets", h.replica_sets()[0]["metadata"]["name"])["spec"]["minReadySeconds"]
        == 10
    )


def test_progress_deadline_exceeded(h: Harness) -> None:
    h.create("deployments", deployment(replicas=1, progressDeadlineSeconds=30))
    assert condition(h.get("deployments", "web"), "Progressing") == ("True", "ReplicaSetUpdated")
    h.tick(20)
    assert condition(h.get("deployments", "web"), "Progressing")[1] != "ProgressDeadlineExceeded"
    h.tick(12)
    d = h.get("deployments", "web")
    assert condition(d, "Progressing") == ("False", "ProgressDeadlineExceeded")
    h.make_ready()  # progress at last
    assert condition(h.get("deployments", "web"), "Progressing") == (
        "True",
        "NewReplicaSetAvailable",
    )


def test_revision_history_limit_deletes_the_oldest(h: Harness) -> None:
    h.create("deployments", deployment(replicas=1, revisionHistoryLimit=1))
    for image in ("v2", "v3", "v4"):
        h.make_ready()
        h.change("deployments", "web", set_image(image))
        roll_until_done(h)
    assert sizes(h) == {"v3": 0, "v4": 1}
    revisions = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"
        ]
        for rs in h.replica_sets()
    }
    assert revisions == {"v3": "3", "v4": "4"}


def test_rollback_reuses_the_old_replica_set(h: Harness) -> None:
    h.create("deployments", deployment(replicas=1))
    h.make_ready()
    h.change("deployments", "web", set_image("v2"))
    roll_until_done(h)
    h.change("deployments", "web", set_image("v1"))
    roll_until_done(h)
    assert len(h.replica_sets()) == 2
    v1 = next(rs for rs in h.replica_sets() if rs["spec"]["replicas"] == 1)
    notes = v1["metadata"]["annotations"]
    assert notes["deployment.kubernetes.io/revision"] == "3"
    assert notes["deployment.kubernetes.io/revision-history"] == "1"


def test_paused_deployment_scales_but_does_not_roll(h: Harness) -> None:
    h.create("deployments", deployment(replicas=2))
    h.make_ready()
    h.change("deployments", "web", lambda d: d["spec"].update(paused=True))
    assert condition(h.get("deployments", "web"), "Progressing") == ("Unknown", "DeploymentPaused")
    h.change("deployments", "web", set_image("v2"))
    assert sizes(h) == {"v1": 2}
    h.change("deployments", "web", lambda d: d["spec"].update(replicas=4))
    assert sizes(h) == {"v1": 4}
    h.change("deployments", "web", lambda d: d["spec"].update(paused=False))
    assert "v2" in sizes(h)
    roll_until_done(h)
    assert sizes(h) == {"v1": 0, "v2": 4}


def test_scaling_mid_rollout_is_proportional(h: Harness) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}
    h.create("deployments", deployment(replicas=10, strategy=strategy))
    h.make_ready()
    h.change("deployments", "web", set_image("v2"))  # v2 pods never get ready
    assert sizes(h) == {"v1": 8, "v2": 5}
    h.change("deployments", "web", lambda d: d["spec"].update(replicas=20))
    grown = sizes(h)
    assert sum(grown.values()) == 20 + 3
    assert grown["v1"] > 8
    assert grown["v2"] > 5


def test_deployment_adopts_a_matching_replica_set(h: Harness) -> None:
    body = deployment("web", 1)
    body["kind"] = "ReplicaSet"
    body["metadata"]["labels"] = {"app": "web"}  # a Deployment claims by the object's labels
    h.create("replicasets", body)
    d = h.create("deployments", deployment("web", 1))
    (rs,) = h.replica_sets()
    assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    # its template has no pod-template-hash label but is the same: it is the new one
    assert rs["metadata"]["name"] == "web"
