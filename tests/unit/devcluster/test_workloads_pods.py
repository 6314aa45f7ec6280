"""Pod facts of the workload controllers, and the ReplicaSet's scale-down victim order
(ActivePodsWithRanks.Less, rule by rule)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from devcluster.workloads.pods import (
    DELETION_COST,
    deletion_cost,
    deletion_order,
    is_active,
    is_available,
    pods_to_delete,
)

NOW = 1_700_000_000.0


def at(seconds_ago: float) -> str:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    *,
    node: str = "devcluster",
    phase: str = "Running",
    ready_for: float | None = 100.0,
    created: float = 1000.0,
    cost: str | None = None,
    restarts: int = 0,
    uid: str | None = None,
    **meta: Any,
) -> dict[str, Any]:
    conditions = []
    if ready_for is not None:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": at(ready_for)})
    else:
        conditions.append({"type": "Ready", "status": "False", "lastTransitionTime": at(5)})
    annotations = {DELETION_COST: cost} if cost is not None else {}
    return {
        "metadata": {
            "name": name,
            "uid": uid or f"uid-{name}",
            "creationTimestamp": at(created),
            "annotations": annotations,
            **meta,
        },
        "spec": {"nodeName": node},
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [{"name": "main", "restartCount": restarts}],
        },
    }


def first_victim(*pods: dict[str, Any], now: float | None = NOW) -> str:
    return str(deletion_order(list(pods), now=now)[0]["metadata"]["name"])


def test_unassigned_pods_go_before_assigned_ones() -> None:
    assert first_victim(pod("assigned", phase="Pending"), pod("unassigned", node="")) == (
        "unassigned"
    )


def test_pending_before_unknown_before_running() -> None:
    running, unknown = pod("running"), pod("unknown", phase="Unknown", ready_for=None)
    pending = pod("pending", phase="Pending", ready_for=None)
    order = deletion_order([running, unknown, pending], now=NOW)
    assert [p["metadata"]["name"] for p in order] == ["pending", "unknown", "running"]


def test_not_ready_before_ready() -> None:
    assert first_victim(pod("ready", ready_for=1), pod("not-ready", ready_for=None)) == "not-ready"


def test_lower_deletion_cost_first_and_it_outranks_age() -> None:
    cheap_old = pod("cheap-old", cost="-5", created=5000, ready_for=4000)
    dear_new = pod("dear-new", cost="10", created=10, ready_for=5)
    plain = pod("plain", created=10, ready_for=5)
    order = [p["metadata"]["name"] for p in deletion_order([dear_new, plain, cheap_old], now=NOW)]
    assert order == ["cheap-old", "plain", "dear-new"]


@pytest.mark.parametrize(
    ("text", "cost"), [("7", 7), (" -3 ", -3), ("x", 0), ("2147483648", 0), (None, 0)]
)
def test_deletion_cost_reads_an_int32(text: str | None, cost: int) -> None:
    assert deletion_cost(pod("p", cost=text)) == cost


def test_doubled_up_pods_first() -> None:
    lonely, crowded = pod("lonely", node="a"), pod("crowded", node="b")
    related = [lonely, crowded, pod("sibling", node="b")]
    order = deletion_order([lonely, crowded], related, now=NOW)
    assert order[0]["metadata"]["name"] == "crowded"


def test_more_recently_ready_first_on_a_logarithmic_scale() -> None:
    # ready 10 s and 1000 s ago: different powers of two
    assert first_victim(pod("old", ready_for=1000), pod("new", ready_for=10)) == "new"
    # ready 100 s and 101 s ago: the same power of two, so the uid decides
    a = pod("a", ready_for=101, uid="0001")
    b = pod("b", ready_for=100, uid="0002")
    assert first_victim(b, a) == "a"
    # without a reference time, plain comparison
    assert first_victim(a, b, now=None) == "b"


def test_more_restarts_first() -> None:
    calm = pod("calm", restarts=0)
    flaky = pod("flaky", restarts=4)
    assert first_victim(calm, flaky) == "flaky"


def test_newer_pods_first_when_all_else_is_equal() -> None:
    old = pod("old", created=5000)
    new = pod("new", created=20)
    assert first_victim(old, new) == "new"


def test_rules_apply_in_order() -> None:
    """Readiness outranks cost, cost outranks restarts, restarts outrank age."""
    ready_cheap = pod("ready-cheap", cost="-100")
    unready_dear = pod("unready-dear", ready_for=None, cost="100")
    assert first_victim(ready_cheap, unready_dear) == "unready-dear"
    flaky_dear = pod("flaky-dear", restarts=9, cost="5")
    calm_cheap = pod("calm-cheap", cost="1")
    assert first_victim(flaky_dear, calm_cheap) == "calm-cheap"
    flaky_old = pod("flaky-old", restarts=3, created=9000)
    calm_new = pod("calm-new", created=1)
    assert first_victim(flaky_old, calm_new) == "flaky-old"


def test_pods_to_delete_takes_the_first_victims() -> None:
    pods = [pod(f"p{i}", cost=str(i)) for i in range(5)]
    assert [p["metadata"]["name"] for p in pods_to_delete(pods, 2, now=NOW)] == ["p0", "p1"]
    assert pods_to_delete(pods, 0) == []
    assert len(pods_to_delete(pods, 9)) == 5


def test_activity_and_availability() -> None:
    assert is_active(pod("p"))
    assert not is_active(pod("done", phase="Succeeded"))
    assert not is_active(pod("going", deletionTimestamp=at(0)))
    ready_3s = pod("p", ready_for=3)
    assert is_available(ready_3s, 0, NOW)
    assert is_available(ready_3s, 2, NOW)
    assert not is_available(ready_3s, 3, NOW)  # strictly more than minReadySeconds
    assert not is_available(pod("q", ready_for=None), 0, NOW)
