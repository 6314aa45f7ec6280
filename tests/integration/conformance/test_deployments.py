"""apps/v1 Deployments: defaults and validation, the ReplicaSets and revisions the
Deployment controller keeps, rolling updates within maxSurge/maxUnavailable, Recreate,
minReadySeconds, progress deadlines, pausing, scaling and cascading deletion.

Tests taking the `workloads` fixture run twice: with the process kubelet, and on a
devcluster in simulate mode.
"""

from __future__ import annotations

from typing import Any

from tests.integration.conformance.helpers import (
    CONTROLLER_TIMEOUT,
    NOT_YET,
    POD_TIMEOUT,
    WatchStream,
    api_error,
    gone,
)
from tests.integration.conformance.workload_helpers import (
    HASH,
    REVISION,
    Obj,
    Workloads,
    condition,
    deployment,
    get_deployment,
    new_version,
    pods,
    read,
    replica_sets,
    sizes,
    wait_rolled_out,
)
from tests.kubeclient import AppsApi
from tests.waiting import wait_for


def create(w: Workloads, body: Obj) -> Obj:
    return read(lambda *a, **k: w.apps.create_namespaced_deployment(w.namespace, body, **k))


def patch(w: Workloads, name: str, body: Obj) -> None:
    w.apps.patch_namespaced_deployment(name, w.namespace, body)


# --------------------------------------------------------------------------- the API


def test_defaults(apps: AppsApi, namespace: str) -> None:
    body = deployment("web", replicas=0)
    del body["spec"]["replicas"]
    created = read(lambda *a, **k: apps.create_namespaced_deployment(namespace, body, **k))
    spec = created["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert created["metadata"]["generation"] == 1


def test_validation(apps: AppsApi, namespace: str) -> None:
    mismatch = deployment("bad")
    mismatch["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    status = api_error(422, apps.create_namespaced_deployment, namespace, mismatch)
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Deployment.apps "bad" is invalid: ')
    assert (
        "spec.template.metadata.labels: Invalid value: "
        'map[string]string{"app":"other"}: `selector` does not match template `labels`'
        in status["message"]
    )
    causes = {c["field"]: c["reason"] for c in status["details"]["causes"]}
    assert causes["spec.template.metadata.labels"] == "FieldValueInvalid"

    frozen = deployment("frozen", strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
    status = api_error(422, apps.create_namespaced_deployment, namespace, frozen)
    assert "may not be 0 when `maxSurge` is 0" in status["message"]

    never = deployment("never")
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    status = api_error(422, apps.create_namespaced_deployment, namespace, never)
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Never"' in status["message"]

    apps.create_namespaced_deployment(namespace, deployment("fixed", replicas=0))
    status = api_error(
        422,
        apps.patch_namespaced_deployment,
        "fixed",
        namespace,
        {"spec": {"selector": {"matchLabels": {"app": "fixed", "x": "y"}}}},
    )
    assert "field is immutable" in status["message"]


def test_generation_counts_spec_and_annotation_changes(apps: AppsApi, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("gen", replicas=0))

    def generation(body: Obj) -> int:
        patched = apps.patch_namespaced_deployment("gen", namespace, body)
        return int(patched.metadata.generation)

    assert generation({"metadata": {"labels": {"team": "a"}}}) == 1
    assert generation({"metadata": {"annotations": {"note": "copied to ReplicaSets"}}}) == 2
    assert generation({"spec": {"replicas": 0}}) == 2  # no change
    assert generation({"spec": {"minReadySeconds": 1}}) == 3
    wait_for(
        lambda: apps.read_namespaced_deployment("gen", namespace).status.observed_generation == 3,
        CONTROLLER_TIMEOUT,
        "the controller to observe generation 3",
    )


# --------------------------------------------------------------------------- rollouts


def test_a_deployment_runs_its_pods_through_a_replica_set(workloads: Workloads) -> None:
    w = workloads
    d = create(w, deployment("web", replicas=2))
    done = wait_rolled_out(w, "web")
    status = done["status"]
    assert status["readyReplicas"] == 2
    assert "unavailableReplicas" not in status
    assert condition(done, "Available") == ("True", "MinimumReplicasAvailable")
    assert condition(done, "Progressing") == ("True", "NewReplicaSetAvailable")
    assert done["metadata"]["annotations"][REVISION] == "1"

    (rs,) = replica_sets(w, "web")
    pod_hash = rs["metadata"]["labels"][HASH]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", HASH: pod_hash}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", HASH: pod_hash}
    (owner,) = rs["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": d["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    notes = rs["metadata"]["annotations"]
    assert notes[REVISION] == "1"
    assert notes["deployment.kubernetes.io/desired-replicas"] == "2"
    assert notes["deployment.kubernetes.io/max-replicas"] == "3"  # 2 + 25% rounded up
    assert rs["status"]["fullyLabeledReplicas"] == 2
    assert rs["status"]["observedGeneration"] == rs["metadata"]["generation"]

    running = pods(w, "web")
    assert len(running) == 2
    for pod in running:
        assert pod["metadata"]["name"].startswith(f"web-{pod_hash}-")
        assert pod["metadata"]["labels"][HASH] == pod_hash
        (pod_owner,) = pod["metadata"]["ownerReferences"]
        assert (pod_owner["kind"], pod_owner["uid"]) == ("ReplicaSet", rs["metadata"]["uid"])
        assert pod_owner["controller"] is True


def test_rolling_update_stays_within_surge_and_availability(workloads: Workloads) -> None:
    w = workloads
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    create(w, deployment("web", replicas=3, strategy=strategy))
    wait_rolled_out(w, "web")
    listed = read(w.apps.list_namespaced_replica_set, w.namespace)
    path = f"/apis/apps/v1/namespaces/{w.namespace}/replicasets"
    with (
        w.cluster.api_client() as client,
        WatchStream(client, path, resourceVersion=listed["metadata"]["resourceVersion"]) as stream,
    ):
        patch(w, "web", new_version("v2"))
        done = wait_rolled_out(w, "web")
        events = stream.until(
            lambda e: (
                e["object"]["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "v1"
                and e["object"]["spec"]["replicas"] == 0
                and e["object"]["status"].get("replicas", 0) == 0
            ),
            timeout=CONTROLLER_TIMEOUT,
        )
    latest: dict[str, Obj] = {rs["metadata"]["name"]: rs for rs in listed["items"]}
    for event in events:
        rs = event["object"]
        latest[rs["metadata"]["name"]] = rs
        # never more pods asked for than replicas + maxSurge
        assert sum(r["spec"]["replicas"] for r in latest.values()) <= 4, events
        # never fewer available than replicas - maxUnavailable
        assert sum(r["status"].get("availableReplicas", 0) for r in latest.values()) >= 3
    assert sizes(w, "web") == {"v1": 0, "v2": 3}  # the old one is kept, scaled to 0
    assert done["metadata"]["annotations"][REVISION] == "2"
    revisions = {
        rs["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]: rs["metadata"][
            "annotations"
        ][REVISION]
        for rs in replica_sets(w, "web")
    }
    assert revisions == {"v1": "1", "v2": "2"}


def test_recreate_stops_old_pods_before_starting_new_ones(workloads: Workloads) -> None:
    w = workloads
    create(w, deployment("re", replicas=2, strategy={"type": "Recreate"}))
    wait_rolled_out(w, "re")
    old_hash = replica_sets(w, "re")[0]["metadata"]["labels"][HASH]
    listed = read(w.core.list_namespaced_pod, w.namespace)
    path = f"/api/v1/namespaces/{w.namespace}/pods"
    with (
        w.cluster.api_client() as client,
        WatchStream(client, path, resourceVersion=listed["metadata"]["resourceVersion"]) as stream,
    ):
        patch(w, "re", new_version("v2"))
        wait_rolled_out(w, "re")
        new_hash = next(
            rs["metadata"]["labels"][HASH]
            for rs in replica_sets(w, "re")
            if rs["metadata"]["labels"][HASH] != old_hash
        )
        seen: dict[str, str] = {}
        old_left = {p["metadata"]["name"] for p in listed["items"]}

        def settled(event: Obj) -> bool:
            pod = event["object"]
            name, labels = pod["metadata"]["name"], pod["metadata"].get("labels", {})
            # An old pod counts until it is gone or has terminated (oldPodsRunning).
            if event["type"] == "DELETED" or pod["status"].get("phase") in ("Failed", "Succeeded"):
                old_left.discard(name)
            elif labels.get(HASH) == new_hash and name not in seen:
                seen[name] = "added"
                assert not old_left, f"{name} came while old pods {old_left} were there"
            return len(seen) == 2 and not old_left

        stream.until(settled, timeout=POD_TIMEOUT)
    assert sizes(w, "re") == {"v1": 0, "v2": 2}


def test_revision_history_limit(workloads: Workloads) -> None:
    w = workloads
    create(w, deployment("hist", replicas=1, revisionHistoryLimit=1))
    for version in ("v2", "v3"):
        wait_rolled_out(w, "hist")
        patch(w, "hist", new_version(version))
    wait_rolled_out(w, "hist")
    wait_for(
        lambda: sizes(w, "hist") == {"v2": 0, "v3": 1},
        CONTROLLER_TIMEOUT,
        lambda: f"one old ReplicaSet left; there are {sizes(w, 'hist')}",
    )
    revisions = sorted(rs["metadata"]["annotations"][REVISION] for rs in replica_sets(w, "hist"))
    assert revisions == ["2", "3"]


def test_min_ready_seconds_delays_availability(workloads: Workloads) -> None:
    w = workloads
    create(w, deployment("slowready", replicas=2, minReadySeconds=2))
    path = f"/apis/apps/v1/namespaces/{w.namespace}/deployments"
    with (
        w.cluster.api_client() as client,
        WatchStream(client, path, fieldSelector="metadata.name=slowready") as stream,
    ):
        events = stream.until(
            lambda e: e["object"]["status"].get("availableReplicas", 0) == 2,
            timeout=POD_TIMEOUT,
        )
    statuses = [e["object"]["status"] for e in events]
    # Every pod was ready before it counted as available.
    assert any(
        s.get("readyReplicas", 0) == 2 and s.get("availableReplicas", 0) < 2 for s in statuses
    ), statuses
    unavailable = [
        s for s in statuses if s.get("readyReplicas") == 2 and not s.get("availableReplicas")
    ]
    assert all(
        ("Available", "False", "MinimumReplicasUnavailable")
        in {(c["type"], c["status"], c["reason"]) for c in s["conditions"]}
        for s in unavailable
    )


def test_progress_deadline_exceeded(apps: AppsApi, namespace: str) -> None:
    """Pods that never become ready: the rollout times out (the process kubelet only,
    simulated pods are always ready)."""
    body = deployment("stuck", replicas=1, progressDeadlineSeconds=2)
    body["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["python", "-c", "raise SystemExit(1)"]},
        "periodSeconds": 1,
    }
    apps.create_namespaced_deployment(namespace, body)

    def timed_out() -> bool:
        d = read(apps.read_namespaced_deployment, "stuck", namespace)
        return condition(d, "Progressing") == ("False", "ProgressDeadlineExceeded")

    wait_for(timed_out, POD_TIMEOUT, "Progressing=False ProgressDeadlineExceeded", retry_on=NOT_YET)
    d = read(apps.read_namespaced_deployment, "stuck", namespace)
    (progressing,) = [c for c in d["status"]["conditions"] if c["type"] == "Progressing"]
    assert progressing["message"].endswith("has timed out progressing.")
    assert condition(d, "Available") == ("False", "MinimumReplicasUnavailable")
    assert d["status"]["unavailableReplicas"] == 1


def test_paused_deployment_does_not_roll_out(workloads: Workloads) -> None:
    w = workloads
    create(w, deployment("paused", replicas=1))
    wait_rolled_out(w, "paused")
    patch(w, "paused", {"spec": {"paused": True}})
    patch(w, "paused", new_version("v2"))

    def observed() -> Obj | None:
        d = get_deployment(w, "paused")
        return d if d["status"].get("observedGeneration") == d["metadata"]["generation"] else None

    d = wait_for(observed, CONTROLLER_TIMEOUT, "the controller to observe the paused spec")
    assert condition(d, "Progressing") == ("Unknown", "DeploymentPaused")
    assert sizes(w, "paused") == {"v1": 1}
    patch(w, "paused", {"spec": {"paused": False}})
    wait_rolled_out(w, "paused")
    assert sizes(w, "paused") == {"v1": 0, "v2": 1}


def test_scale_subresource(workloads: Workloads) -> None:
    w = workloads
    create(w, deployment("scaled", replicas=1))
    scale = w.apps.read_namespaced_deployment_scale("scaled", w.namespace)
    assert scale.spec.replicas == 1
    w.apps.patch_namespaced_deployment_scale("scaled", w.namespace, {"spec": {"replicas": 3}})
    done = wait_rolled_out(w, "scaled")
    assert done["spec"]["replicas"] == 3
    scale = w.apps.read_namespaced_deployment_scale("scaled", w.namespace)
    assert (scale.status.replicas, scale.status.selector) == (3, "app=scaled")
    assert len(pods(w, "scaled")) == 3
    w.apps.patch_namespaced_deployment_scale("scaled", w.namespace, {"spec": {"replicas": 1}})
    wait_for(lambda: len(pods(w, "scaled")) == 1, POD_TIMEOUT, "the Deployment to scale down to 1")


def test_deleting_a_deployment(workloads: Workloads) -> None:
    w = workloads
    create(w, deployment("gone", replicas=2))
    create(w, deployment("kept", replicas=1))
    wait_rolled_out(w, "gone")
    wait_rolled_out(w, "kept")
    w.apps.delete_namespaced_deployment("gone", w.namespace)
    wait_for(
        lambda: not replica_sets(w, "gone") and not pods(w, "gone", terminating=True),
        POD_TIMEOUT,
        "the ReplicaSet and pods of a deleted Deployment to go",
    )
    w.apps.delete_namespaced_deployment("kept", w.namespace, propagation_policy="Orphan")
    wait_for(
        lambda: gone(lambda: w.apps.read_namespaced_deployment("kept", w.namespace)),
        CONTROLLER_TIMEOUT,
        "the orphaning Deployment to go",
    )
    (rs,) = replica_sets(w, "kept")
    assert "ownerReferences" not in rs["metadata"]
    assert len(pods(w, "kept")) == 1


def test_status_of_a_deployment_scaled_to_zero(apps: AppsApi, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("none", replicas=0))

    def observed() -> Any:
        d = read(apps.read_namespaced_deployment, "none", namespace)
        return d if d["status"].get("observedGeneration") == 1 else None

    d = wait_for(observed, CONTROLLER_TIMEOUT, "the controller to see the Deployment")
    assert condition(d, "Available") == ("True", "MinimumReplicasAvailable")
    assert {"replicas", "readyReplicas", "updatedReplicas"}.isdisjoint(d["status"])  # zeros
