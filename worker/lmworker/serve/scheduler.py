"""Continuous batching: which sequences the next forward pass extends.

The engine calls `plan(now)` between forward passes. Every running sequence holds a
KV-cache slot and decodes one token per pass. Waiting sequences are admitted into free
slots at that boundary, and their prompts run in the same pass as the others' decoding
(prefill alongside decode): a newcomer never waits for the batch to drain, and the
running sequences never pause for more than the one pass that carries a prompt. A
sequence that finishes, or whose client went away, frees its slot at once, so the next
pass can admit someone else.

This module decides and records; it is pure (no torch, no I/O, no clock: callers pass
`now`) and not thread-safe (the engine serialises calls under its lock).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length"]


class QueueFullError(Exception):
    """Every slot is taken and `max_queue` requests already wait for one."""


@dataclass(frozen=True)
class SchedulerLimits:
    max_batch_size: int  # sequences in one forward pass = KV-cache slots
    max_queue: int  # requests that may wait for a slot
    max_batch_delay: float  # seconds an idle engine holds a request back for company
    max_prefill_tokens: int  # prompt tokens admitted per pass (one prompt always fits)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 0 or self.max_prefill_tokens < 1:
            raise ValueError(f"invalid scheduler limits: {self}")
        if self.max_batch_delay < 0:
            raise ValueError(f"max_batch_delay must be >= 0, got {self.max_batch_delay}")


@dataclass
class Sequence:
    """One request's progress, as far as batching is concerned."""

    id: int
    prompt_tokens: int
    max_new_tokens: int
    arrived: float
    slot: int | None = None
    generated: int = 0


@dataclass(frozen=True)
class StepPlan:
    """One forward pass: prompts to prefill (just given a slot), and sequences to decode."""

    admitted: tuple[Sequence, ...]
    decoding: tuple[Sequence, ...]

    @property
    def size(self) -> int:
        return len(self.admitted) + len(self.decoding)

    @property
    def tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.admitted) + len(self.decoding)


@dataclass(frozen=True)
class Wait:
    """Nothing to run yet: ask again after `seconds`, or when work arrives (None)."""

    seconds: float | None


def admit_count(prompt_lengths: list[int], free_slots: int, max_prefill_tokens: int) -> int:
    """How many waiting prompts (in arrival order) join the next pass.

    As many as there are free slots, while their tokens fit the prefill budget; the first
    always joins when a slot is free, since a prompt longer than the budget must run at
    some point and waiting longer would not make it shorter.
    """
    count = 0
    tokens = 0
    for length in prompt_lengths[:free_slots]:
        if count and tokens + length > max_prefill_tokens:
            break
        count += 1
        tokens += length
    return count


def batch_delay(
    now: float, oldest_arrival: float, running: int, waiting: int, free_slots: int, limit: float
) -> float:
    """Seconds to hold admission back, in the hope that more requests arrive to share the
    first pass with. Only an idle engine waits (a running batch admits newcomers at every
    pass anyway), and only while the waiting requests leave slots free."""
    if running or waiting >= free_slots:
        return 0.0
    return max(0.0, oldest_arrival + limit - now)


def finish_reason(generated: int, max_new_tokens: int, is_stop_token: bool) -> FinishReason | None:
    """Why a sequence ends after its latest token, or None while it goes on."""
    if is_stop_token:
        return "stop"
    if generated >= max_new_tokens:
        return "length"
    return None


class Scheduler:
    def __init__(self, limits: SchedulerLimits) -> None:
        self.limits = limits
        self._waiting: deque[Sequence] = deque()
        self._running: dict[int, Sequence] = {}
        self._free_slots = list(range(limits.max_batch_size))  # a heap: lowest slot first

    @property
    def waiting_count(self) -> int:
        return len(self._waiting)

    @property
    def running_count(self) -> int:
        """Sequences holding a KV-cache slot."""
        return len(self._running)

    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    def add(self, seq_id: int, prompt_tokens: int, max_new_tokens: int, now: float) -> Sequence:
        """Queue a request; QueueFullError when it would wait beyond `max_queue` others.

        Requests that a free slot will take at the next pass do not count as queued.
        """
        if prompt_tokens < 1 or max_new_tokens < 1:
            raise ValueError("a sequence needs at least one prompt token and one new token")
        if seq_id in self._running or any(s.id == seq_id for s in self._waiting):
            raise ValueError(f"sequence {seq_id} is already scheduled")
        if len(self._waiting) >= len(self._free_slots) + self.limits.max_queue:
            raise QueueFullError(
                f"{len(self._running)} requests are running and {len(self._waiting)} waiting"
            )
        seq = Sequence(seq_id, prompt_tokens, max_new_tokens, now)
        self._waiting.append(seq)
        return seq

    def cancel(self, seq_id: int) -> bool:
        """Drop a sequence wherever it is; its slot is free for the next pass."""
        seq = self._running.pop(seq_id, None)
        if seq is not None:
            self._release(seq)
            return True
        for waiting in self._waiting:
            if waiting.id == seq_id:
                self._waiting.remove(waiting)
                return True
        return False

    def plan(self, now: float) -> StepPlan | Wait:
        """The next forward pass, or how long to wait for one."""
        admitted: list[Sequence] = []
        if self._waiting and self._free_slots:
            delay = batch_delay(
                now,
                self._waiting[0].arrived,
                len(self._running),
                len(self._waiting),
                len(self._free_slots),
                self.limits.max_batch_delay,
            )
            if delay > 0:
                return Wait(delay)
            count = admit_count(
                [s.prompt_tokens for s in self._waiting],
                len(self._free_slots),
                self.limits.max_prefill_tokens,
            )
            for _ in range(count):
                seq = self._waiting.popleft()
                seq.slot = heapq.heappop(self._free_slots)
                admitted.append(seq)
        decoding = tuple(self._running.values())
        for seq in admitted:
            self._running[seq.id] = seq
        if not admitted and not decoding:
            return Wait(None)
        return StepPlan(tuple(admitted), decoding)

    def record_token(self, seq_id: int, is_stop_token: bool) -> FinishReason | None:
        """Count a sequence's new token; a finished sequence frees its slot at once.

        A sequence cancelled while its pass ran is no longer known: None.
        """
        seq = self._running.get(seq_id)
        if seq is None:
            return None
        seq.generated += 1
        reason = finish_reason(seq.generated, seq.max_new_tokens, is_stop_token)
        if reason is not None:
            del self._running[seq_id]
            self._release(seq)
        return reason

    def _release(self, seq: Sequence) -> None:
        if seq.slot is not None:
            heapq.heappush(self._free_slots, seq.slot)
            seq.slot = None
