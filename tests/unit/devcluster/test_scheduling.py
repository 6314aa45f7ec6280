"""devcluster's node capacity and scheduler: a pod is bound only where its requests fit,
waits Unschedulable otherwise, and is bound once capacity frees."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from devcluster import scheduling
from devcluster.apiserver.cluster import Cluster
from devcluster.apiserver.options import Ctx, DeleteOptions
from devcluster.cli import _quantity
from devcluster.gc import Controllers

Obj = dict[str, Any]
NS = "default"


def pod(name: str, cpu: str | None = None, memory: str | None = None, **extra: Any) -> Obj:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    container: Obj = {"name": "main", "image": "python", "command": ["sleep", "9"]}
    if requests:
        container["resources"] = {"requests": requests}
    return {"metadata": {"name": name}, "spec": {"containers": [container], **extra}}


class Node:
    def __init__(self, cpu: str = "2", memory: str = "4Gi") -> None:
        self.cluster = Cluster(None, simulate=True, node_cpu=cpu, node_memory=memory)
        self.gc = Controllers(self.cluster)
        self.gc.attach()
        self.pods = self.cluster.rt("", "v1", "pods")

    def create(self, body: Obj) -> Obj:
        created = self.cluster.create(self.pods, NS, body, Ctx())
        self.gc.run_pending()
        return created

    def get(self, name: str) -> Obj:
        return self.cluster.get(self.pods, NS, name)

    def delete(self, name: str) -> None:
        self.cluster.delete(self.pods, NS, name, DeleteOptions())
        self.gc.run_pending()

    def events(self, name: str) -> list[Obj]:
        return [
            e
            for e in self.cluster.store.items(("", "events"), NS)
            if e["involvedObject"]["name"] == name
        ]


def scheduled(pod: Obj) -> Obj:
    return next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")


def test_the_node_shows_its_capacity_and_allocatable() -> None:
    node = Node(cpu="3", memory="6Gi").cluster.store.get(("", "nodes"), "", "devcluster")
    assert node is not None
    assert node["status"]["capacity"]["cpu"] == "3"
    assert node["status"]["allocatable"]["memory"] == "6Gi"
    default = Cluster(None, simulate=True).store.get(("", "nodes"), "", "devcluster")
    assert default is not None
    assert default["status"]["allocatable"]["cpu"] == scheduling.DEFAULT_NODE_CPU


def test_pods_bind_while_they_fit_and_wait_unschedulable_after() -> None:
    n = Node(cpu="2", memory="4Gi")
    a = n.create(pod("a", cpu="1", memory="1Gi"))
    b = n.create(pod("b", cpu="500m"))
    assert a["spec"]["nodeName"] == b["spec"]["nodeName"] == "devcluster"
    c = n.create(pod("c", cpu="1", memory="1Gi"))
    assert not c["spec"].get("nodeName")
    assert c["status"]["phase"] == "Pending"
    cond = scheduled(c)
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    assert cond["message"] == "0/1 nodes are available: 1 Insufficient cpu."
    (event,) = n.events("c")
    assert (event["type"], event["reason"]) == ("Warning", "FailedScheduling")
    assert event["message"] == cond["message"]
    # A pod that fits in what is left is bound even while c waits.
    d = n.create(pod("d", cpu="500m"))
    assert d["spec"]["nodeName"] == "devcluster"
    # Both resources short: both named, as kube-scheduler does.
    e = n.create(pod("e", cpu="4", memory="8Gi"))
    assert scheduled(e)["message"] == (
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
    )
    # Capacity frees: the oldest waiting pod that fits is bound.
    n.delete("a")
    c = n.get("c")
    assert c["spec"]["nodeName"] == "devcluster"
    assert scheduled(c)["status"] == "True"
    assert not n.get("e")["spec"].get("nodeName")
    assert len(n.events("c")) == 1  # no second FailedScheduling for the same message


def test_terminated_pods_free_their_requests() -> None:
    n = Node(cpu="1")
    n.create(pod("a", cpu="1"))
    assert not n.create(pod("b", cpu="1"))["spec"].get("nodeName")

    def succeed(obj: Obj) -> None:
        obj["status"]["phase"] = "Succeeded"

    n.cluster.mutate(n.pods, NS, "a", succeed, subresource="status")
    n.gc.run_pending()
    assert n.get("b")["spec"]["nodeName"] == "devcluster"


def test_an_unbound_pod_is_deleted_at_once() -> None:
    n = Node(cpu="1")
    n.create(pod("a", cpu="1"))
    n.create(pod("b", cpu="1"))
    n.delete("b")
    assert n.cluster.store.get(("", "pods"), NS, "b") is None


def test_requests_arithmetic() -> None:
    p = pod("x", cpu="250m", memory="1Gi")
    p["spec"]["containers"].append(
        {"name": "side", "image": "i", "resources": {"limits": {"cpu": "500m"}}}
    )
    p["spec"]["initContainers"] = [
        {"name": "init", "image": "i", "resources": {"requests": {"cpu": "2"}}}
    ]
    # Apps: 250m + 500m (a limit alone is the request); the init container's 2 is larger.
    assert scheduling.pod_requests(p) == {"cpu": 2.0, "memory": float(2**30)}
    assert scheduling.pod_requests(pod("none")) == {"cpu": 0.0, "memory": 0.0}


def test_local_up_flags_check_quantities() -> None:
    assert _quantity("1500m") == "1500m"
    with pytest.raises(argparse.ArgumentTypeError, match="not a Kubernetes quantity"):
        _quantity("lots")
    with pytest.raises(argparse.ArgumentTypeError, match="more than zero"):
        _quantity("0")
