"""The scheduling pass: binds the pods that wait for room once their requests fit.

A pod is bound when it is created if it fits (devcluster.resources.strategies); one
that did not waits unbound with PodScheduled=False/Unschedulable. This pass, run by the
built-in controllers (devcluster.gc) after a pod goes away or terminates, or a waiting
pod or the node changes, binds the waiting pods in order (higher `spec.priority` first,
then the oldest) while they fit, and keeps each waiting pod's condition message and a
`FailedScheduling` Warning Event (one per distinct message) as kube-scheduler does.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

from devcluster import scheduling
from devcluster.store import Obj, rfc3339
from devcluster.values import as_dict, as_list

if TYPE_CHECKING:
    from devcluster.gc import ObjectAPI

log = logging.getLogger(__name__)

PODS = ("", "pods")
NODES = ("", "nodes")
COMPONENT = "default-scheduler"


def _order(pod: Obj) -> tuple[int, str, str]:
    meta = as_dict(pod.get("metadata"))
    priority = as_dict(pod.get("spec")).get("priority")
    return (
        -(priority if isinstance(priority, int) else 0),
        str(meta.get("creationTimestamp") or ""),
        str(meta.get("name") or ""),
    )


def _condition(pod: Obj) -> Obj:
    for c in as_list(as_dict(pod.get("status")).get("conditions")):
        if as_dict(c).get("type") == "PodScheduled":
            return as_dict(c)
    return {}


def schedule_pass(cluster: ObjectAPI, noted: dict[str, str]) -> int:
    """Bind what fits now; returns how many pods were bound. `noted` (uid -> message)
    remembers the FailedScheduling Events already recorded, across passes."""
    from devcluster.workloads.events import WARNING, EventRecorder

    nodes = cluster.store.items(NODES)
    rt = cluster.registry.storage_type(PODS)
    if not nodes or rt is None:
        return 0
    node = nodes[0]
    node_name = str(node["metadata"]["name"])
    pods = cluster.store.items(PODS)
    waiting = sorted((p for p in pods if scheduling.is_unscheduled(p)), key=_order)
    for uid in set(noted) - {str(p["metadata"].get("uid")) for p in waiting}:
        del noted[uid]
    if not waiting:
        return 0
    allocatable = scheduling.node_allocatable(node)
    load = scheduling.node_load(pods, node_name)
    recorder = EventRecorder(cluster, COMPONENT)
    bound = 0
    for pod in waiting:
        uid = str(pod["metadata"].get("uid"))
        lacking = scheduling.insufficient(pod, allocatable, load)
        obj = copy.deepcopy(pod)
        status = obj.setdefault("status", {})
        others = [
            c for c in as_list(status.get("conditions")) if as_dict(c).get("type") != "PodScheduled"
        ]
        if not lacking:
            obj.setdefault("spec", {})["nodeName"] = node_name
            status["conditions"] = [scheduling.scheduled_condition(rfc3339()), *others]
            cluster.commit(rt, obj, pod)
            for r, v in scheduling.pod_requests(pod).items():
                load[r] += v
            noted.pop(uid, None)
            bound += 1
            continue
        message = scheduling.unschedulable_message(lacking)
        stored = pod
        if _condition(pod).get("message") != message:
            status["conditions"] = [scheduling.unschedulable_condition(message, rfc3339()), *others]
            stored = cluster.commit(rt, obj, pod)
        if noted.get(uid) != message:
            noted[uid] = message
            recorder.record(stored, WARNING, "FailedScheduling", message)
    return bound
