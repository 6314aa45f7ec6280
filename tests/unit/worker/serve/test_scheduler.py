"""The continuous-batching scheduler: pure decisions, no model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmworker.serve.scheduler import (
    QueueFullError,
    Scheduler,
    SchedulerLimits,
    StepPlan,
    Wait,
    admit_count,
    batch_delay,
    finish_reason,
)


def scheduler(batch: int = 2, queue: int = 2, delay: float = 0.0, prefill: int = 1000) -> Scheduler:
    return Scheduler(SchedulerLimits(batch, queue, delay, prefill))


def plan(s: Scheduler, now: float = 0.0) -> StepPlan:
    decision = s.plan(now)
    assert isinstance(decision, StepPlan), decision
    return decision


def ids(seqs: tuple[object, ...]) -> list[int]:
    return [s.id for s in seqs]  # type: ignore[attr-defined]


def test_idle_scheduler_waits_for_work() -> None:
    assert scheduler().plan(0.0) == Wait(None)


def test_admits_into_free_slots_and_decodes_alongside() -> None:
    s = scheduler(batch=2)
    s.add(1, 5, 3, now=0.0)
    first = plan(s)
    assert ids(first.admitted) == [1]
    assert first.decoding == ()
    assert first.admitted[0].slot == 0
    assert s.record_token(1, is_stop_token=False) is None
    s.add(2, 4, 3, now=0.1)
    second = plan(s)
    # The newcomer's prompt runs in the same pass as the running sequence's decoding.
    assert ids(second.admitted) == [2]
    assert ids(second.decoding) == [1]
    assert second.admitted[0].slot == 1
    assert second.tokens == 4 + 1


def test_a_finished_sequence_frees_its_slot_for_the_next_pass() -> None:
    s = scheduler(batch=1, queue=1)
    s.add(1, 3, 1, now=0.0)
    s.add(2, 3, 1, now=0.0)
    assert ids(plan(s).admitted) == [1]
    assert s.record_token(1, is_stop_token=False) == "length"
    nxt = plan(s)
    assert ids(nxt.admitted) == [2]
    assert nxt.admitted[0].slot == 0
    assert nxt.decoding == ()


def test_cancel_frees_the_slot_at_once_and_drops_waiting_requests() -> None:
    s = scheduler(batch=1, queue=2)
    for i in (1, 2, 3):
        s.add(i, 3, 10, now=0.0)
    plan(s)
    assert s.cancel(3)
    assert s.waiting_count == 1
    assert s.cancel(1)
    assert s.running_count == 0
    assert ids(plan(s).admitted) == [2]
    assert not s.cancel(1)  # already gone
    assert s.record_token(1, is_stop_token=False) is None  # its pass ended after the cancel


def test_queue_full_counts_only_requests_without_a_free_slot() -> None:
    s = scheduler(batch=2, queue=1)
    for i in range(3):  # two will take the free slots, one queues
        s.add(i, 3, 10, now=0.0)
    with pytest.raises(QueueFullError):
        s.add(9, 3, 10, now=0.0)
    plan(s)  # 0 and 1 run; 2 waits, alone in the queue, which is full
    with pytest.raises(QueueFullError):
        s.add(3, 3, 10, now=0.0)
    s.cancel(2)
    s.add(3, 3, 10, now=0.0)
    assert s.waiting_count == 1


def test_stop_token_and_length_finish() -> None:
    assert finish_reason(1, 5, is_stop_token=True) == "stop"
    assert finish_reason(5, 5, is_stop_token=False) == "length"
    assert finish_reason(4, 5, is_stop_token=False) is None


def test_an_idle_engine_holds_a_lone_request_back_for_company() -> None:
    s = scheduler(batch=4, delay=0.5)
    s.add(1, 3, 10, now=10.0)
    wait = s.plan(10.1)
    assert isinstance(wait, Wait)
    assert wait.seconds == pytest.approx(0.4)
    s.add(2, 3, 10, now=10.2)
    assert ids(plan(s, now=10.6).admitted) == [1, 2]


def test_no_delay_while_running_or_when_the_batch_is_full() -> None:
    assert batch_delay(0.0, 0.0, running=1, waiting=1, free_slots=3, limit=1.0) == 0.0
    assert batch_delay(0.0, 0.0, running=0, waiting=3, free_slots=3, limit=1.0) == 0.0
    assert batch_delay(0.2, 0.0, running=0, waiting=1, free_slots=3, limit=1.0) == 0.8


def test_prefill_budget_limits_admissions_but_one_prompt_always_fits() -> None:
    assert admit_count([100, 100, 100], free_slots=3, max_prefill_tokens=250) == 2
    assert admit_count([5000, 10], free_slots=3, max_prefill_tokens=250) == 1
    assert admit_count([10, 10, 10], free_slots=2, max_prefill_tokens=250) == 2
    assert admit_count([], free_slots=2, max_prefill_tokens=250) == 0


def test_limits_and_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="limits"):
        SchedulerLimits(0, 1, 0.0, 1)
    s = scheduler()
    with pytest.raises(ValueError, match="at least one"):
        s.add(1, 0, 5, now=0.0)
    s.add(1, 2, 5, now=0.0)
    with pytest.raises(ValueError, match="already"):
        s.add(1, 2, 5, now=0.0)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 50), st.integers(1, 4)),
        st.tuples(st.just("cancel"), st.integers(0, 30), st.just(0)),
        st.tuples(st.just("step"), st.integers(0, 3), st.just(0)),
    ),
    max_size=60,
)


@given(operations, st.integers(1, 4), st.integers(0, 3))
def test_invariants_under_any_sequence_of_events(
    ops: list[tuple[str, int, int]], batch: int, queue: int
) -> None:
    """Slots are never shared nor lost, a batch never exceeds its size, the queue its
    bound, and every admitted sequence decodes at every pass until it ends."""
    s = scheduler(batch=batch, queue=queue, prefill=60)
    next_id = 0
    live: set[int] = set()
    for op, a, b in ops:
        if op == "add":
            try:
                s.add(next_id, a, b, now=0.0)
                live.add(next_id)
            except QueueFullError:
                assert s.waiting_count >= queue
            next_id += 1
        elif op == "cancel":
            assert s.cancel(a) == (a in live)
            live.discard(a)
        else:
            decision = s.plan(0.0)
            if isinstance(decision, Wait):
                assert s.running_count == 0
                assert s.waiting_count == 0
                continue
            running_before = {q.id for q in decision.decoding}
            slots = [q.slot for q in decision.admitted + decision.decoding]
            assert len(slots) == len(set(slots)) <= batch
            assert all(slot is not None and 0 <= slot < batch for slot in slots)
            assert running_before | {q.id for q in decision.admitted} == {
                q.id for q in decision.admitted + decision.decoding
            }
            for q in decision.admitted + decision.decoding:
                if s.record_token(q.id, is_stop_token=(a == 0 and q.generated == 0)):
                    live.discard(q.id)
        assert s.running_count <= batch
        assert s.waiting_count <= batch + queue
        assert s.running_count + s.waiting_count == len(live)
