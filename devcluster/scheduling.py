"""The scheduler's decisions (pure): does a pod fit on the node, and if not, why.

What kube-scheduler's NodeResourcesFit filter does, for the one node devcluster has:

- A pod's requests are, per resource, the larger of the sum over its app containers and
  the largest single init container (init containers run one at a time, before the
  app containers); a container that sets only a limit requests that limit (the API's
  defaulting).
- A node's load is the sum of the requests of the pods bound to it that have not
  terminated (phase neither Succeeded nor Failed). A pod that is being deleted still
  counts until it is gone, as on a real node.
- A pod fits when, for cpu and memory, load + its requests <= the node's allocatable.
  Otherwise it stays Pending, unbound, with the condition PodScheduled=False, reason
  Unschedulable, and kube-scheduler's message, e.g. `0/1 nodes are available:
  1 Insufficient cpu.`; it is bound as soon as capacity frees (devcluster.gc's
  scheduling pass).
"""

from __future__ import annotations

from collections.abc import Iterable

from devcluster.podspec.env import parse_quantity
from devcluster.store import Obj
from devcluster.values import as_dict, as_list

RESOURCES = ("cpu", "memory")
TERMINATED = ("Succeeded", "Failed")
UNSCHEDULABLE = "Unschedulable"
# What `elasticlm local up` offers unless told otherwise: more than any test or
# benchmark here requests (500 simulated jobs of 3 pods at 500m and 1Gi each fit).
DEFAULT_NODE_CPU = "1000"
DEFAULT_NODE_MEMORY = "4Ti"


def _amount(amounts: Obj, resource: str) -> float:
    raw = amounts.get(resource)
    if raw is None:
        return 0.0
    try:
        return parse_quantity(raw)
    except ValueError:
        return 0.0  # the API server's validation answers for malformed quantities


def container_requests(container: Obj) -> dict[str, float]:
    resources = as_dict(container.get("resources"))
    requests, limits = as_dict(resources.get("requests")), as_dict(resources.get("limits"))
    return {r: _amount(requests, r) if r in requests else _amount(limits, r) for r in RESOURCES}


def pod_requests(pod: Obj) -> dict[str, float]:
    spec = as_dict(pod.get("spec"))
    apps = [container_requests(as_dict(c)) for c in as_list(spec.get("containers"))]
    inits = [container_requests(as_dict(c)) for c in as_list(spec.get("initContainers"))]
    return {
        r: max(sum(c[r] for c in apps), max((c[r] for c in inits), default=0.0)) for r in RESOURCES
    }


def node_allocatable(node: Obj) -> dict[str, float]:
    status = as_dict(node.get("status"))
    amounts = as_dict(status.get("allocatable")) or as_dict(status.get("capacity"))
    return {r: _amount(amounts, r) for r in RESOURCES}


def node_load(pods: Iterable[Obj], node_name: str) -> dict[str, float]:
    """The summed requests of the pods bound to `node_name` that have not terminated."""
    load = dict.fromkeys(RESOURCES, 0.0)
    for pod in pods:
        if as_dict(pod.get("spec")).get("nodeName") != node_name:
            continue
        if as_dict(pod.get("status")).get("phase") in TERMINATED:
            continue
        for r, v in pod_requests(pod).items():
            load[r] += v
    return load


def insufficient(pod: Obj, allocatable: dict[str, float], load: dict[str, float]) -> list[str]:
    """The resources the node lacks for `pod` (empty: it fits)."""
    wanted = pod_requests(pod)
    # A small tolerance: quantities such as 0.1 + 0.2 must not fail on float rounding.
    return [r for r in RESOURCES if wanted[r] > 0 and load[r] + wanted[r] > allocatable[r] + 1e-9]


def unschedulable_message(lacking: list[str], nodes: int = 1) -> str:
    """kube-scheduler's words: `0/1 nodes are available: 1 Insufficient cpu, 1
    Insufficient memory.`"""
    reasons = ", ".join(f"{nodes} Insufficient {r}" for r in lacking)
    return f"0/{nodes} nodes are available: {reasons}."


def unschedulable_condition(message: str, moment: str) -> Obj:
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": UNSCHEDULABLE,
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": moment,
    }


def scheduled_condition(moment: str) -> Obj:
    return {
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": moment,
    }


def is_unscheduled(pod: Obj) -> bool:
    """A pod waiting for a node: unbound, not being deleted, not terminated."""
    return (
        not as_dict(pod.get("spec")).get("nodeName")
        and not as_dict(pod.get("metadata")).get("deletionTimestamp")
        and as_dict(pod.get("status")).get("phase") not in TERMINATED
    )
