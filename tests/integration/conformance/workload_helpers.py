"""Helpers of the Deployment and ReplicaSet conformance tests: manifests of sleeping
pods, raw reads (the API's own JSON, camelCase), and waits for rollouts."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.integration.conformance.helpers import NOT_YET, POD_TIMEOUT, PYTHON_IMAGE
from tests.integration.harness import Cluster
from tests.kubeclient import AppsApi, CoreApi
from tests.waiting import wait_for

Obj = dict[str, Any]
SLEEPER = ["python", "-c", "import time; time.sleep(3600)"]
REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"


@dataclass
class Workloads:
    """A namespace to run Deployments and ReplicaSets in, on one kind of cluster."""

    cluster: Cluster
    namespace: str
    apps: AppsApi
    core: CoreApi
    simulated: bool


def pod_template(name: str, version: str = "v1", **pod_spec: Any) -> Obj:
    """Pods that sleep; `version` (an env var) makes a new template without a new image."""
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": PYTHON_IMAGE,
                    "command": SLEEPER,
                    "env": [{"name": "VERSION", "value": version}],
                }
            ],
            **pod_spec,
        },
    }


def deployment(name: str = "web", replicas: int = 2, version: str = "v1", **spec: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, version),
            **spec,
        },
    }


def replica_set(name: str = "solo", replicas: int = 2, **spec: Any) -> Obj:
    body = deployment(name, replicas, **spec)
    body["kind"] = "ReplicaSet"
    body["metadata"]["labels"] = {"app": name}
    return body


def new_version(version: str) -> Obj:
    """A patch that changes the pod template (strategic merge: env merges by name)."""
    env = [{"name": "VERSION", "value": version}]
    return {"spec": {"template": {"spec": {"containers": [{"name": "main", "env": env}]}}}}


def read(call: Callable[..., Any], *args: Any) -> Obj:
    """A read through the client, as the API's JSON."""
    response = call(*args, _preload_content=False)
    result: Obj = json.loads(response.data)
    return result


def get_deployment(w: Workloads, name: str) -> Obj:
    return read(w.apps.read_namespaced_deployment, name, w.namespace)


def replica_sets(w: Workloads, app: str) -> list[Obj]:
    listed = read(w.apps.list_namespaced_replica_set, w.namespace)
    items: list[Obj] = listed["items"]
    return [rs for rs in items if rs["metadata"].get("labels", {}).get("app") == app]


def pods(w: Workloads, app: str, *, terminating: bool = False) -> list[Obj]:
    listed = read(w.core.list_namespaced_pod, w.namespace)
    return [
        p
        for p in listed["items"]
        if p["metadata"].get("labels", {}).get("app") == app
        and (terminating or not p["metadata"].get("deletionTimestamp"))
    ]


def condition(obj: Obj, kind: str) -> tuple[str, str] | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c["type"] == kind:
            return c["status"], c["reason"]
    return None


def rolled_out(d: Obj) -> bool:
    """What `kubectl rollout status` waits for."""
    status, desired = d.get("status", {}), int(d["spec"]["replicas"])
    counts = [status.get(k, 0) for k in ("updatedReplicas", "replicas", "availableReplicas")]
    return counts == [desired] * 3 and status.get("observedGeneration", 0) >= int(
        d["metadata"]["generation"]
    )


def wait_rolled_out(w: Workloads, name: str, timeout: float = POD_TIMEOUT) -> Obj:
    def done() -> Obj | None:
        d = get_deployment(w, name)
        return d if rolled_out(d) else None

    return wait_for(
        done,
        timeout,
        lambda: f"deployment {name} to roll out; it is {get_deployment(w, name).get('status')}",
        retry_on=NOT_YET,
    )


def sizes(w: Workloads, app: str) -> dict[str, int]:
    """spec.replicas of each ReplicaSet, by the VERSION of its template."""
    result = {}
    for rs in replica_sets(w, app):
        env = rs["spec"]["template"]["spec"]["containers"][0]["env"]
        result[env[0]["value"]] = rs["spec"]["replicas"]
    return result
