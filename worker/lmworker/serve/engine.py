"""The inference engine: one thread runs the model over the continuous batch.

Callers on an asyncio loop `submit` token ids and iterate the returned handle for new
tokens; a thread of its own plans each forward pass with the `Scheduler`, runs one
`forward_packed` for the whole batch (new prompts and decoding sequences together, each
in its own KV-cache slot), samples every row with its request's settings and hands each
token to its request's loop. torch releases the GIL while it computes, so the event loop
keeps serving HTTP meanwhile.

    engine = Engine(model, EngineConfig(max_batch_size=8), stop_token_ids={eos})
    engine.start()
    handle = engine.submit(prompt_ids, max_new_tokens=64, sampling=SamplingParams(0.0))
    async for token in handle:   # GeneratedToken(token_id, finish_reason on the last)
        ...
    engine.stop()

Everything the scheduler holds, and the table of live requests, is guarded by one lock
that the model thread holds only between passes, never while the model runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from lmworker.model import LlamaModel
from lmworker.serve.sampling import SamplingParams, sample_next
from lmworker.serve.scheduler import (
    FinishReason,
    QueueFullError,
    Scheduler,
    SchedulerLimits,
    StepPlan,
)
from lmworker.serve.scheduler import Sequence as ScheduledSequence

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineObserver",
    "EngineStoppedError",
    "GeneratedToken",
    "GenerationHandle",
    "QueueFullError",
    "SamplingParams",
]

log = logging.getLogger("lmworker.serve.engine")


class EngineStoppedError(RuntimeError):
    """The engine shut down before this request finished."""


@dataclass(frozen=True)
class EngineConfig:
    max_batch_size: int = 8
    max_queue: int = 64
    max_batch_delay: float = 0.01  # seconds
    # Prompt tokens admitted per pass: bounds how long one pass may stall the others.
    max_prefill_tokens: int = 4096
    # Positions per sequence (prompt + new tokens); None: the model's context length.
    max_length: int | None = None


@dataclass(frozen=True)
class GeneratedToken:
    token_id: int
    # Set on a request's last token. "stop": it is a stop token (end of text), which
    # belongs to no text; "length": the request reached its max_new_tokens.
    finish_reason: FinishReason | None = None
    stop_token: bool = False


class EngineObserver(Protocol):
    """What the engine reports as it runs (the server's metrics implement it)."""

    def step(self, batch_size: int, tokens: int, seconds: float) -> None: ...

    def first_token(self, seconds: float) -> None: ...

    def inter_token(self, seconds: float) -> None: ...

    def occupancy(self, running: int, waiting: int) -> None: ...


class GenerationHandle:
    """A submitted request: iterate it (asynchronously) for its tokens; cancel to drop it.

    Iteration ends after the token that carries a finish reason, and raises what the
    engine failed with (EngineStoppedError at shutdown).
    """

    def __init__(self, engine: Engine, seq_id: int, prompt_tokens: int) -> None:
        self._engine = engine
        self.id = seq_id
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[GeneratedToken | BaseException] = asyncio.Queue()
        self._done = False

    def __aiter__(self) -> GenerationHandle:
        return self

    async def __anext__(self) -> GeneratedToken:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self.completion_tokens += 1
        if item.finish_reason is not None:
            self.finish_reason = item.finish_reason
            self._done = True
        return item

    def ready_tokens(self) -> list[GeneratedToken]:
        """Tokens already delivered and not yet iterated (to send them in one piece)."""
        out: list[GeneratedToken] = []
        while not self._done and not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, BaseException):
                self._queue.put_nowait(item)  # raised by the next __anext__
                break
            self.completion_tokens += 1
            if item.finish_reason is not None:
                self.finish_reason = item.finish_reason
                self._done = True
            out.append(item)
        return out

    def cancel(self) -> None:
        """Stop generating (the client went away, or a stop string matched); idempotent."""
        self._engine.cancel(self.id)

    def _deliver(self, item: GeneratedToken | BaseException) -> None:
        """From the model thread: queue an item on the request's own loop."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)


@dataclass
class _Live:
    """A request the engine is generating for: what the scheduler does not need to know."""

    handle: GenerationHandle
    prompt: list[int]
    sampling: SamplingParams
    generator: torch.Generator
    ignore_eos: bool
    arrived: float
    last_token: int = -1
    last_token_at: float = 0.0
    cancelled: bool = False


@dataclass
class _Row:
    """One sequence of a planned pass."""

    seq: ScheduledSequence
    live: _Live
    prefill: bool
    slot: int = field(init=False)

    def __post_init__(self) -> None:
        assert self.seq.slot is not None, "a planned sequence holds a slot"
        self.slot = self.seq.slot


class Engine:
    def __init__(
        self,
        model: LlamaModel,
        config: EngineConfig,
        *,
        stop_token_ids: Iterable[int] = (),
        observer: EngineObserver | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.stop_token_ids = frozenset(stop_token_ids)
        self.observer = observer
        self.max_length = min(
            config.max_length or model.cfg.context_length, model.cfg.context_length
        )
        self.device = model.embed_tokens.weight.device
        self._scheduler = Scheduler(
            SchedulerLimits(
                max_batch_size=config.max_batch_size,
                max_queue=config.max_queue,
                max_batch_delay=config.max_batch_delay,
                max_prefill_tokens=config.max_prefill_tokens,
            )
        )
        self._cache = model.new_slot_cache(config.max_batch_size, self.max_length)
        self._live: dict[int, _Live] = {}
        self._cond = threading.Condition()
        self._next_id = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the caller's side (any thread with a running event loop) ------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the engine is already started")
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def submit(
        self,
        prompt: Sequence[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        *,
        seed: int | None = None,
        ignore_eos: bool = False,
    ) -> GenerationHandle:
        """Queue a request; call it on the event loop that will iterate the handle.

        QueueFullError when the queue is full, ValueError for a request that cannot fit,
        EngineStoppedError once the engine is stopping.
        """
        if not prompt:
            raise ValueError("the prompt has no tokens")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if len(prompt) + max_new_tokens > self.max_length:
            raise ValueError(
                f"prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) exceeds the "
                f"{self.max_length} positions a sequence may have"
            )
        generator = torch.Generator(self.device)
        generator.manual_seed(seed if seed is not None else random.getrandbits(63))
        with self._cond:
            if self._stopping:
                raise EngineStoppedError("the server is shutting down")
            seq_id = self._next_id
            now = time.monotonic()
            self._scheduler.add(
                seq_id, len(prompt), max_new_tokens, now
            )  # may raise QueueFullError
            self._next_id += 1
            handle = GenerationHandle(self, seq_id, len(prompt))
            self._live[seq_id] = _Live(
                handle, list(prompt), sampling or SamplingParams(), generator, ignore_eos, now
            )
            self._report_occupancy()
            self._cond.notify()
        return handle

    def cancel(self, seq_id: int) -> None:
        with self._cond:
            live = self._live.pop(seq_id, None)
            if live is None:
                return
            live.cancelled = True
            self._scheduler.cancel(seq_id)
            self._report_occupancy()
            self._cond.notify()

    def alive(self) -> bool:
        """Whether the model thread runs (it only ends when stopped)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def running(self) -> int:
        with self._cond:
            return self._scheduler.running_count

    @property
    def waiting(self) -> int:
        with self._cond:
            return self._scheduler.waiting_count

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the model thread; requests still live get EngineStoppedError."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            for seq_id, live in list(self._live.items()):
                self._scheduler.cancel(seq_id)
                live.handle._deliver(
                    EngineStoppedError("the server shut down before this finished")
                )
            self._live.clear()
            self._report_occupancy()

    # -- the model thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # /healthz reports the dead thread; the log says why
            log.exception("The engine thread died")
            raise

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                rows = self._next_rows()
                if rows is None:
                    return
                started = time.monotonic()
                try:
                    tokens = self._forward(rows)
                except Exception as exc:  # a bug or out of memory: fail this pass, go on
                    log.exception("a forward pass of %d sequences failed", len(rows))
                    self._fail(rows, exc)
                    continue
                if self.observer is not None:
                    n_tokens = sum(len(r.live.prompt) if r.prefill else 1 for r in rows)
                    self.observer.step(len(rows), n_tokens, time.monotonic() - started)
                self._deliver(rows, tokens)

    def _next_rows(self) -> list[_Row] | None:
        """Block until there is a pass to run (None once stopping)."""
        with self._cond:
            while not self._stopping:
                decision = self._scheduler.plan(time.monotonic())
                if isinstance(decision, StepPlan):
                    self._report_occupancy()
                    return self._rows(decision)
                self._cond.wait(decision.seconds)
            return None

    def _rows(self, plan: StepPlan) -> list[_Row]:
        rows = [_Row(s, self._live[s.id], prefill=True) for s in plan.admitted]
        rows += [_Row(s, self._live[s.id], prefill=False) for s in plan.decoding]
        # Slot order: consecutive decoding slots are then read from the cache as a view.
        return sorted(rows, key=lambda r: r.slot)

    def _forward(self, rows: list[_Row]) -> list[int]:
        ids: list[int] = []
        counts: list[int] = []
        for row in rows:
            if row.prefill:
                self._cache.release(row.slot)  # whatever the slot held before is gone
                ids.extend(row.live.prompt)
                counts.append(len(row.live.prompt))
            else:
                ids.append(row.live.last_token)
                counts.append(1)
        input_ids = torch.tensor(ids, dtype=torch.int64, device=self.device)
        logits = self.model.forward_packed(input_ids, [r.slot for r in rows], counts, self._cache)
        return sample_next(
            logits, [r.live.sampling for r in rows], [r.live.generator for r in rows]
        )

    def _deliver(self, rows: list[_Row], tokens: list[int]) -> None:
        now = time.monotonic()
        with self._cond:
            for row, token in zip(rows, tokens, strict=True):
                live = row.live
                if live.cancelled:
                    continue
                is_stop = token in self.stop_token_ids and not live.ignore_eos
                reason = self._scheduler.record_token(row.seq.id, is_stop)
                if self.observer is not None:
                    if row.prefill:
                        self.observer.first_token(now - live.arrived)
                    else:
                        self.observer.inter_token(now - live.last_token_at)
                live.last_token, live.last_token_at = token, now
                if reason is not None:
                    del self._live[row.seq.id]
                live.handle._deliver(GeneratedToken(token, reason, is_stop))
            self._report_occupancy()

    def _fail(self, rows: list[_Row], exc: Exception) -> None:
        with self._cond:
            for row in rows:
                if self._live.pop(row.seq.id, None) is not None:
                    self._scheduler.cancel(row.seq.id)
                    row.live.handle._deliver(exc)
            self._report_occupancy()

    def _report_occupancy(self) -> None:
        if self.observer is not None:
            self.observer.occupancy(self._scheduler.running_count, self._scheduler.waiting_count)
