"""What the workload controllers read from pods (pure): activity, readiness,
availability after minReadySeconds, and the order in which a ReplicaSet deletes pods
when it scales down.

The deletion order is `ActivePodsWithRanks.Less` of pkg/controller/controller_utils.go,
rule by rule: a pod is deleted before another when, at the first rule that tells them
apart, it is

1. not assigned to a node (the other is);
2. in an earlier phase: Pending, then Unknown, then Running;
3. not ready (the other is);
4. of a lower `controller.kubernetes.io/pod-deletion-cost` (default 0);
5. on a node with more active pods of the same owner ("doubled up");
6. ready more recently (both ready);
7. restarted more (its most restarted container);
8. created more recently.

Times in 6 and 8 compare on a logarithmic scale of their age (LogarithmicScaleDown,
on by default since Kubernetes 1.22): two pods whose ages fall in the same power of two
of nanoseconds are ordered by uid instead, a stable pseudo-random choice.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from devcluster.store import Obj, parse_time
from devcluster.values import as_dict, as_list

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}
INT32 = (-(2**31), 2**31 - 1)


def timestamp(value: Any) -> float | None:
    """An RFC 3339 time as seconds since the epoch; None when absent or malformed."""
    moment = parse_time(value) if isinstance(value, str) else None
    return moment.timestamp() if moment is not None else None


def is_active(pod: Obj) -> bool:
    """Neither finished nor being deleted (FilterActivePods)."""
    phase = as_dict(pod.get("status")).get("phase")
    return phase not in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp")


def _ready_condition(pod: Obj) -> Obj:
    for condition in map(as_dict, as_list(as_dict(pod.get("status")).get("conditions"))):
        if condition.get("type") == "Ready":
            return condition
    return {}


def is_ready(pod: Obj) -> bool:
    return _ready_condition(pod).get("status") == "True"


def ready_since(pod: Obj) -> float | None:
    """When a ready pod became ready (its Ready condition's lastTransitionTime)."""
    condition = _ready_condition(pod)
    if condition.get("status") != "True":
        return None
    return timestamp(condition.get("lastTransitionTime"))


def is_available(pod: Obj, min_ready_seconds: int, now: float) -> bool:
    """Ready for more than `min_ready_seconds` (podutil.IsPodAvailable)."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + min_ready_seconds < now


def available_at(pod: Obj, min_ready_seconds: int) -> float | None:
    """When a ready pod will count as available; None when it is not ready."""
    since = ready_since(pod)
    if since is None or min_ready_seconds <= 0:
        return since
    return since + min_ready_seconds


def deletion_cost(pod: Obj) -> int:
    """The pod-deletion-cost annotation; 0 when absent or not an int32."""
    value = as_dict(pod["metadata"].get("annotations")).get(DELETION_COST)
    try:
        cost = int(str(value).strip())
    except ValueError:
        return 0
    return cost if INT32[0] <= cost <= INT32[1] else 0


def max_restarts(pod: Obj) -> int:
    counts = [
        int(as_dict(c).get("restartCount") or 0)
        for c in as_list(as_dict(pod.get("status")).get("containerStatuses"))
    ]
    return max(counts, default=0)


def node_of(pod: Obj) -> str:
    return str(as_dict(pod.get("spec")).get("nodeName") or "")


def colocation_ranks(pods: Sequence[Obj], related: Sequence[Obj]) -> dict[str, int]:
    """Each pod's rank: how many active related pods share its node (by pod uid)."""
    per_node = Counter(node_of(p) for p in related if is_active(p))
    return {p["metadata"]["uid"]: per_node[node_of(p)] for p in pods}


def _log_rank(moment: float, now: float) -> int:
    nanoseconds = (now - moment) * 1e9
    return int(math.log2(nanoseconds)) if nanoseconds > 0 else -1


def _newer_first(
    a: float | None, b: float | None, a_uid: str, b_uid: str, now: float | None
) -> bool:
    """Rule 6/8 for two different times: the later (or the missing) one first."""
    if a is None or b is None:
        return a is None
    if now is None:
        return a > b
    difference = _log_rank(a, now) - _log_rank(b, now)
    if difference == 0:
        return a_uid < b_uid
    return difference < 0


def delete_before(a: Obj, b: Obj, ranks: dict[str, int], now: float | None) -> bool:
    """Whether the ReplicaSet controller would rather delete `a` than `b`."""
    node_a, node_b = node_of(a), node_of(b)
    if node_a != node_b and (not node_a or not node_b):
        return not node_a
    phase_a = PHASE_ORDINAL.get(str(as_dict(a.get("status")).get("phase")), 0)
    phase_b = PHASE_ORDINAL.get(str(as_dict(b.get("status")).get("phase")), 0)
    if phase_a != phase_b:
        return phase_a < phase_b
    ready_a, ready_b = is_ready(a), is_ready(b)
    if ready_a != ready_b:
        return not ready_a
    cost_a, cost_b = deletion_cost(a), deletion_cost(b)
    if cost_a != cost_b:
        return cost_a < cost_b
    uid_a, uid_b = a["metadata"]["uid"], b["metadata"]["uid"]
    rank_a, rank_b = ranks.get(uid_a, 0), ranks.get(uid_b, 0)
    if rank_a != rank_b:
        return rank_a > rank_b
    if ready_a and ready_b:
        since_a, since_b = ready_since(a), ready_since(b)
        if since_a != since_b:
            return _newer_first(since_a, since_b, uid_a, uid_b, now)
    restarts_a, restarts_b = max_restarts(a), max_restarts(b)
    if restarts_a != restarts_b:
        return restarts_a > restarts_b
    created_a = timestamp(a["metadata"].get("creationTimestamp"))
    created_b = timestamp(b["metadata"].get("creationTimestamp"))
    if created_a != created_b:
        return _newer_first(created_a, created_b, uid_a, uid_b, now)
    return False


def deletion_order(
    pods: Sequence[Obj], related: Sequence[Obj] = (), now: float | None = None
) -> list[Obj]:
    """`pods` sorted the way a ReplicaSet deletes them, first victim first.

    `related` are the active pods of every ReplicaSet of the same owner (for rule 5);
    without `now`, times compare plainly instead of logarithmically.
    """
    ranks = colocation_ranks(pods, related or pods)

    def compare(a: Obj, b: Obj) -> int:
        if delete_before(a, b, ranks, now):
            return -1
        return 1 if delete_before(b, a, ranks, now) else 0

    return sorted(pods, key=functools.cmp_to_key(compare))


def pods_to_delete(
    pods: Sequence[Obj], count: int, related: Sequence[Obj] = (), now: float | None = None
) -> list[Obj]:
    """The `count` pods a ReplicaSet deletes first (getPodsToDelete)."""
    if count <= 0:
        return []
    if count >= len(pods):
        return list(pods)
    return deletion_order(pods, related, now)[:count]
