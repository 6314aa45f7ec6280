"""apps/v1 ReplicaSets: the pods they make and count, adoption and release by
selector, and which pods go first when they scale down (pod-deletion-cost, readiness).

Tests taking the `workloads` fixture run twice: with the process kubelet, and on a
devcluster in simulate mode.
"""

from __future__ import annotations

from tests.integration.conformance.helpers import (
    CONTROLLER_TIMEOUT,
    POD_TIMEOUT,
    pod_ready,
    python_pod,
)
from tests.integration.conformance.workload_helpers import (
    SLEEPER,
    Obj,
    Workloads,
    pods,
    read,
    replica_set,
)
from tests.kubeclient import AppsApi, CoreApi
from tests.waiting import wait_for

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def create(w: Workloads, body: Obj) -> Obj:
    return read(lambda *a, **k: w.apps.create_namespaced_replica_set(w.namespace, body, **k))


def rs_status(w: Workloads, name: str) -> Obj:
    status: Obj = read(w.apps.read_namespaced_replica_set, name, w.namespace)["status"]
    return status


def wait_available(w: Workloads, name: str, replicas: int) -> Obj:
    return wait_for(
        lambda: (s := rs_status(w, name)).get("availableReplicas", 0) == replicas and s,
        POD_TIMEOUT,
        lambda: f"{replicas} available pods; status {rs_status(w, name)}",
    )


def scale(w: Workloads, name: str, replicas: int) -> None:
    w.apps.patch_namespaced_replica_set_scale(name, w.namespace, {"spec": {"replicas": replicas}})


def names(w: Workloads, app: str) -> set[str]:
    return {p["metadata"]["name"] for p in pods(w, app)}


def test_replica_set_makes_owns_and_counts_its_pods(workloads: Workloads) -> None:
    w = workloads
    rs = create(w, replica_set("solo", 2))
    status = wait_available(w, "solo", 2)
    assert status["replicas"] == 2
    assert status["fullyLabeledReplicas"] == 2
    assert status["readyReplicas"] == 2
    assert status["observedGeneration"] == rs["metadata"]["generation"]
    for pod in pods(w, "solo"):
        assert pod["metadata"]["generateName"] == "solo-"
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "solo",
            "uid": rs["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    # a pod that goes is replaced
    victim = sorted(names(w, "solo"))[0]
    w.core.delete_namespaced_pod(victim, w.namespace, grace_period_seconds=0)
    wait_for(
        lambda: len(names(w, "solo")) == 2 and victim not in names(w, "solo"),
        POD_TIMEOUT,
        "a replacement pod",
    )


def test_replica_set_adopts_orphans_and_releases_strays(workloads: Workloads) -> None:
    w = workloads
    orphan = python_pod("orphan", "import time; time.sleep(3600)", labels={"app": "solo"})
    orphan["spec"]["restartPolicy"] = "Always"
    w.core.create_namespaced_pod(w.namespace, orphan)
    rs = create(w, replica_set("solo", 1))

    def adopted() -> Obj | None:
        pod = read(w.core.read_namespaced_pod, "orphan", w.namespace)
        return pod if pod["metadata"].get("ownerReferences") else None

    (owner,) = wait_for(adopted, POD_TIMEOUT, "the orphan adopted")["metadata"]["ownerReferences"]
    assert (owner["uid"], owner["controller"]) == (rs["metadata"]["uid"], True)
    wait_for(
        lambda: rs_status(w, "solo").get("observedGeneration") == 1,
        CONTROLLER_TIMEOUT,
        "the ReplicaSet's status",
    )
    assert names(w, "solo") == {"orphan"}  # it counts: no pod made

    w.core.patch_namespaced_pod("orphan", w.namespace, {"metadata": {"labels": {"app": "x"}}})

    def released() -> bool:
        pod = read(w.core.read_namespaced_pod, "orphan", w.namespace)
        return "ownerReferences" not in pod["metadata"] and len(names(w, "solo")) == 1

    wait_for(released, POD_TIMEOUT, "the stray released and replaced")


def test_scale_down_honours_pod_deletion_cost(workloads: Workloads) -> None:
    w = workloads
    create(w, replica_set("costly", 3))
    wait_available(w, "costly", 3)
    ordered = sorted(names(w, "costly"))
    for cost, name in zip(("100", "-5", "7"), ordered, strict=True):
        w.core.patch_namespaced_pod(
            name, w.namespace, {"metadata": {"annotations": {DELETION_COST: cost}}}
        )
    scale(w, "costly", 2)
    wait_for(
        lambda: names(w, "costly") == {ordered[0], ordered[2]},
        POD_TIMEOUT,
        lambda: f"the cheapest pod to go; pods {names(w, 'costly')}",
    )
    scale(w, "costly", 1)
    wait_for(
        lambda: names(w, "costly") == {ordered[0]},
        POD_TIMEOUT,
        lambda: f"the dearest pod to stay; pods {names(w, 'costly')}",
    )


def test_scale_down_takes_unready_pods_before_ready_ones(
    apps: AppsApi, core: CoreApi, namespace: str
) -> None:
    """Readiness outranks deletion cost (process kubelet: simulated pods are all ready)."""
    for name, exit_code, cost in (("good-a", 0, "1"), ("good-b", 0, "1"), ("bad", 1, "1000")):
        pod = python_pod(name, "import time; time.sleep(3600)", labels={"app": "mixed"})
        container = pod["spec"]["containers"][0]
        container["command"] = SLEEPER
        container["readinessProbe"] = {
            "exec": {"command": ["python", "-c", f"raise SystemExit({exit_code})"]},
            "periodSeconds": 1,
        }
        pod["spec"]["restartPolicy"] = "Always"
        pod["metadata"]["annotations"] = {DELETION_COST: cost}
        core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: pod_ready(core, "good-a", namespace) and pod_ready(core, "good-b", namespace),
        POD_TIMEOUT,
        "the good pods to be ready",
    )
    apps.create_namespaced_replica_set(namespace, replica_set("mixed", 2))

    def remaining() -> set[str]:
        listed = read(core.list_namespaced_pod, namespace)
        return {
            p["metadata"]["name"]
            for p in listed["items"]
            if not p["metadata"].get("deletionTimestamp")
        }

    wait_for(
        lambda: remaining() == {"good-a", "good-b"},
        CONTROLLER_TIMEOUT,
        lambda: f"the unready pod to go first; pods {remaining()}",
    )
