"""The rendezvous' membership decisions."""

from __future__ import annotations

import dataclasses

from lmworker.rounds import Member, MembershipView, decide_round


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
