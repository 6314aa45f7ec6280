"""The rendezvous' membership decisions."""

from __future__ import annotations

import dataclasses

import pytest

from lmworker.rounds import Member, MembershipView, decide_round, global_rank


def member(slot: int, index: int, expected: int = 2, leaving: bool = False) -> Member:
    return Member(slot=slot, index=index, pod=f"w{index}", expected=expected, leaving=leaving)


def view(**kw: object) -> MembershipView:
    base = MembershipView(
        live=(),
        current_round=0,
        current_members=(),
        current_failed=False,
        current_formed=True,
        since_round=10.0,
        since_first_seen=0.0,
        since_last_change=10.0,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def decide(v: MembershipView, min_nodes: int = 1, max_nodes: int = 3):  # type: ignore[no-untyped-def]
    return decide_round(v, min_nodes, max_nodes, settle=0.25, form_timeout=15, start_timeout=30)


def test_start_waits_for_the_expected_world_size() -> None:
    assert decide(view(live=(member(1, 0),))) is None
    d = decide(view(live=(member(2, 1), member(1, 0))))
    assert d is not None
    assert d.members == (1, 2)
    assert not d.stop


def test_ranks_follow_pod_indexes_not_registration_order() -> None:
    d = decide(view(live=(member(1, 2, 3), member(2, 0, 3), member(3, 1, 3))))
    assert d is not None
    assert d.members == (2, 3, 1)


def test_start_with_min_nodes_after_the_start_timeout() -> None:
    v = view(live=(member(1, 0, expected=3),), since_first_seen=31.0)
    d = decide(v, min_nodes=1)
    assert d is not None
    assert d.members == (1,)
    assert "after waiting" in d.reason
    assert decide(v, min_nodes=2) is None


def test_join_after_settling_and_only_once_formed() -> None:
    live = (member(1, 0), member(2, 1), member(3, 2, expected=3))
    current = {"current_round": 1, "current_members": (1, 2)}
    assert decide(view(live=live, since_last_change=0.1, **current)) is None
    assert decide(view(live=live, current_formed=False, since_round=1, **current)) is None
    d = decide(view(live=live, **current))
    assert d is not None
    assert d.members == (1, 2, 3)
    assert "joined" in d.reason


def test_max_nodes_caps_the_round_keeping_the_lowest_indexes() -> None:
    live = (member(1, 0), member(2, 1), member(3, 2), member(4, 3))
    d = decide(view(live=live, current_round=1, current_members=(1, 2, 3)))
    assert d is None  # the fourth worker is beyond max-nodes and waits


def test_lost_worker_replaced_at_once_without_settling() -> None:
    v = view(live=(member(1, 0),), current_round=2, current_members=(1, 2), since_last_change=0.0)
    d = decide(v)
    assert d is not None
    assert d.members == (1,)
    assert "lost" in d.reason


def test_failed_collective_reforms_even_when_everyone_answered() -> None:
    v = view(live=(member(1, 0), member(2, 1)), current_round=2, current_members=(1, 2))
    d = decide(dataclasses.replace(v, current_failed=True))
    assert d is not None
    assert d.members == (1, 2)
    assert "failed" in d.reason


def test_survivors_below_min_wait_for_replacements() -> None:
    v = view(live=(member(1, 0),), current_round=2, current_members=(1, 2))
    assert decide(v, min_nodes=2) is None


def test_leaving_worker_is_dropped() -> None:
    v = view(
        live=(member(1, 0), member(2, 1), member(3, 2, leaving=True)),
        current_round=3,
        current_members=(1, 2, 3),
    )
    d = decide(v)
    assert d is not None
    assert d.members == (1, 2)
    assert "leaving" in d.reason


def test_everyone_leaving_is_a_stop_round() -> None:
    v = view(
        live=(member(1, 0, leaving=True), member(2, 1, leaving=True)),
        current_round=3,
        current_members=(1, 2),
    )
    d = decide(v)
    assert d is not None
    assert d.stop
    assert d.members == ()


def test_unformed_round_is_replaced_after_the_timeout() -> None:
    v = view(
        live=(member(1, 0),),
        current_round=3,
        current_members=(1,),
        current_formed=False,
        since_round=16.0,
    )
    d = decide(v)
    assert d is not None
    assert "not formed" in d.reason


def test_no_rounds_once_training_is_done() -> None:
    assert decide(view(live=(member(1, 0), member(2, 1)), done=True)) is None


def test_stable_membership_keeps_the_round() -> None:
    v = view(live=(member(1, 0), member(2, 1)), current_round=1, current_members=(1, 2))
    assert decide(v) is None


# -- pods of several processes (worker.processesPerPod) --------------------------------


def proc(slot: int, index: int, local: int, size: int = 2, **kw: object) -> Member:
    return Member(
        slot=slot,
        index=index,
        pod=f"w{index}",
        expected=int(kw.get("expected", 2)),  # type: ignore[call-overload]
        leaving=bool(kw.get("leaving", False)),
        local_rank=local,
        local_size=size,
        group=str(kw.get("group", f"g{index}")),
    )


def test_global_rank_is_pod_major() -> None:
    assert [global_rank(p, lr, 2) for p in range(3) for lr in range(2)] == [0, 1, 2, 3, 4, 5]
    assert global_rank(1, 3, 4) == 7
    with pytest.raises(ValueError, match="local rank 2"):
        global_rank(0, 2, 2)


def test_rounds_take_whole_pods_in_pod_major_order() -> None:
    # Registration order mixes pods and local ranks; ranks come out pod by pod.
    live = (proc(1, 1, 1), proc(2, 0, 0), proc(3, 1, 0), proc(4, 0, 1))
    d = decide(view(live=live))
    assert d is not None
    assert d.members == (2, 4, 3, 1)  # pod 0: local 0, 1; then pod 1: local 0, 1
    assert "2 workers x 2 processes" in d.reason


def test_a_pod_with_a_process_missing_is_not_counted() -> None:
    # Pod 1 has only registered its local rank 0: the start waits for all of pod 1.
    live = (proc(1, 0, 0), proc(2, 0, 1), proc(3, 1, 0))
    assert decide(view(live=live)) is None
    # After the start timeout, the one whole pod starts alone (min 1); pod 1 is not in it.
    d = decide(view(live=live, since_first_seen=31.0))
    assert d is not None
    assert d.members == (1, 2)


def test_max_nodes_counts_pods_not_processes() -> None:
    live = tuple(proc(10 * i + k + 1, i, k, expected=3) for i in range(3) for k in range(2))
    d = decide(view(live=live), max_nodes=2)
    assert d is not None
    assert d.members == (1, 2, 11, 12)


def test_a_lost_process_takes_its_pod_out_of_the_round() -> None:
    current = {"current_round": 1, "current_members": (1, 2, 3, 4)}
    # Slot 4 (pod 1, local rank 1) died; its sibling is still registered.
    live = (proc(1, 0, 0), proc(2, 0, 1), proc(3, 1, 0))
    d = decide(view(live=live, since_last_change=0.0, **current))
    assert d is not None
    assert d.members == (1, 2)
    assert "lost" in d.reason


def test_a_pod_leaves_as_a_whole() -> None:
    current = {"current_round": 1, "current_members": (1, 2, 3, 4)}
    # Only one process of pod 1 has asked to leave so far: the pod goes all the same.
    live = (proc(1, 0, 0), proc(2, 0, 1), proc(3, 1, 0, leaving=True), proc(4, 1, 1))
    d = decide(view(live=live, **current))
    assert d is not None
    assert d.members == (1, 2)
    assert d.reason.startswith("1 worker(s) leaving")


def test_a_restarted_pod_joins_once_all_its_processes_registered() -> None:
    current = {"current_round": 2, "current_members": (1, 2)}
    base = (proc(1, 0, 0), proc(2, 0, 1))
    half = (*base, proc(7, 1, 0, group="g1-again"))
    assert decide(view(live=half, **current)) is None
    d = decide(view(live=(*half, proc(8, 1, 1, group="g1-again")), **current))
    assert d is not None
    assert d.members == (1, 2, 7, 8)
    assert "1 worker(s) joined" in d.reason


def test_a_process_that_registered_again_keeps_its_pod_whole() -> None:
    # Given up by the rendezvous (slot 2 dead), the process registers again as slot 5
    # in the same group: the pod is whole again with the new slot.
    current = {"current_round": 1, "current_members": (1, 2)}
    live = (proc(1, 0, 0), proc(5, 0, 1))
    d = decide(view(live=live, **current), min_nodes=1)
    assert d is not None
    assert d.members == (1, 5)
