"""The engine: batched continuous decoding gives what each request would get alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import torch

from lmworker.model import LlamaModel, generate
from lmworker.serve.engine import (
    Engine,
    EngineConfig,
    EngineStoppedError,
    GenerationHandle,
    QueueFullError,
    SamplingParams,
)
from tests.tiny_models import tiny_model

GREEDY = SamplingParams(temperature=0.0)
PROMPTS = [
    [1, 2, 3, 4, 5],
    [9, 8],
    [100],
    [7] * 11,
    [200, 13, 10, 40, 41, 42],
    [55, 66, 77],
]


@pytest.fixture(scope="module")
def model() -> LlamaModel:
    return tiny_model()


class Recorder:
    """An EngineObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []
        self.first_tokens = 0
        self.inter_tokens = 0

    def step(self, batch_size: int, tokens: int, seconds: float) -> None:
        self.steps.append((batch_size, tokens))

    def first_token(self, seconds: float) -> None:
        self.first_tokens += 1

    def inter_token(self, seconds: float) -> None:
        self.inter_tokens += 1

    def occupancy(self, running: int, waiting: int) -> None:
        pass


async def tokens(handle: GenerationHandle) -> list[int]:
    return [t.token_id async for t in handle]


def alone(model: LlamaModel, prompt: list[int], n: int) -> list[int]:
    out = generate(model, torch.tensor([prompt]), n)
    return [int(t) for t in out[0, len(prompt) :]]


@pytest.fixture
async def engine_factory(model: LlamaModel) -> AsyncIterator[list[Engine]]:
    engines: list[Engine] = []
    yield engines
    for engine in engines:
        engine.stop()


def started(engines: list[Engine], model: LlamaModel, **config: object) -> Engine:
    engine = Engine(model, EngineConfig(**config), observer=Recorder())  # type: ignore[arg-type]
    engines.append(engine)
    engine.start()
    return engine


async def test_greedy_batched_output_equals_decoding_alone(
    model: LlamaModel, engine_factory: list[Engine]
) -> None:
    """Sequences join while others decode (and wait for slots): each gets exactly the
    tokens it would get decoded alone."""
    engine = started(engine_factory, model, max_batch_size=3, max_batch_delay=0.0)
    new = 12
    first = [engine.submit(p, new, GREEDY) for p in PROMPTS[:2]]
    # Join mid-batch: once the first two are decoding.
    async for _ in first[0]:
        if first[0].completion_tokens == 3:
            break
    later = [engine.submit(p, new, GREEDY) for p in PROMPTS[2:]]
    rest_of_first = await tokens(first[0])
    results = [await tokens(h) for h in [first[1], *later]]
    assert len(rest_of_first) == new - 3
    expected = [alone(model, p, new) for p in PROMPTS]
    assert expected[0][3:] == rest_of_first
    assert results == expected[1:]
    steps = engine.observer.steps  # type: ignore[union-attr]
    assert max(size for size, _ in steps) == 3
    # At least one pass prefilled a prompt alongside decoding sequences.
    assert any(size > 1 and tokens_ > size for size, tokens_ in steps)


async def test_finish_reasons_and_stop_tokens(model: LlamaModel) -> None:
    expected = alone(model, PROMPTS[0], 8)
    stop_at = expected[4]
    first_stop = expected.index(stop_at)
    engine = Engine(model, EngineConfig(max_batch_delay=0.0), stop_token_ids={stop_at})
    engine.start()
    try:
        handle = engine.submit(PROMPTS[0], 8, GREEDY)
        got = [t async for t in handle]
        assert [t.token_id for t in got] == expected[: first_stop + 1]
        assert got[-1].finish_reason == "stop"
        assert got[-1].stop_token
        assert handle.finish_reason == "stop"
        assert all(t.finish_reason is None for t in got[:-1])
        ignoring = engine.submit(PROMPTS[0], 8, GREEDY, ignore_eos=True)
        assert await tokens(ignoring) == expected
        assert ignoring.finish_reason == "length"
    finally:
        engine.stop()


async def test_cancel_frees_the_slot_for_a_waiting_request(
    model: LlamaModel, engine_factory: list[Engine]
) -> None:
    engine = started(engine_factory, model, max_batch_size=1, max_queue=4, max_batch_delay=0.0)
    long = engine.submit(PROMPTS[0], 100, GREEDY)
    waiting = engine.submit(PROMPTS[1], 5, GREEDY)
    await anext(long)
    assert engine.running == 1
    assert engine.waiting == 1
    long.cancel()
    assert await tokens(waiting) == alone(model, PROMPTS[1], 5)
    assert engine.running == 0
    assert engine.waiting == 0


async def test_a_full_queue_refuses_at_once(model: LlamaModel) -> None:
    engine = Engine(model, EngineConfig(max_batch_size=1, max_queue=1))  # not started
    engine.submit([1], 3, GREEDY)  # takes the free slot at the next pass
    engine.submit([2], 3, GREEDY)  # waits
    with pytest.raises(QueueFullError):
        engine.submit([3], 3, GREEDY)
    assert engine.waiting == 2


async def test_requests_that_cannot_fit_are_refused(model: LlamaModel) -> None:
    engine = Engine(model, EngineConfig(max_length=16))
    assert engine.max_length == 16
    with pytest.raises(ValueError, match="exceeds the 16 positions"):
        engine.submit([1] * 10, 7, GREEDY)
    with pytest.raises(ValueError, match="no tokens"):
        engine.submit([], 7, GREEDY)


async def test_a_seed_gives_the_same_sample_with_or_without_company(
    model: LlamaModel, engine_factory: list[Engine]
) -> None:
    engine = started(engine_factory, model, max_batch_size=4, max_batch_delay=0.0)
    sampled = SamplingParams(temperature=1.0, top_p=0.9, top_k=50)
    by_itself = await tokens(engine.submit(PROMPTS[3], 10, sampled, seed=42))
    crowd = [engine.submit(p, 10, sampled) for p in PROMPTS[:3]]
    in_company = await tokens(engine.submit(PROMPTS[3], 10, sampled, seed=42))
    await asyncio.gather(*(tokens(h) for h in crowd))
    assert by_itself == in_company
    other_seed = await tokens(engine.submit(PROMPTS[3], 10, sampled, seed=43))
    assert other_seed != by_itself


async def test_stop_ends_requests_in_flight(model: LlamaModel) -> None:
    engine = Engine(model, EngineConfig(max_batch_size=1, max_queue=2))
    engine.start()
    running = engine.submit(PROMPTS[0], 100, GREEDY)
    queued = engine.submit(PROMPTS[1], 100, GREEDY)
    await anext(running)
    engine.stop()
    for handle in (running, queued):
        with pytest.raises(EngineStoppedError):
            await tokens(handle)
    with pytest.raises(EngineStoppedError):
        engine.submit(PROMPTS[0], 5, GREEDY)
    assert not engine.alive()


async def test_observer_sees_every_token(model: LlamaModel, engine_factory: list[Engine]) -> None:
    engine = started(engine_factory, model, max_batch_delay=0.0)
    await asyncio.gather(*(tokens(engine.submit(p, 4, GREEDY)) for p in PROMPTS[:3]))
    recorder = engine.observer
    assert isinstance(recorder, Recorder)
    assert recorder.first_tokens == 3
    assert recorder.inter_tokens == 9


def test_bf16_engine_runs() -> None:
    model = tiny_model().to(torch.bfloat16)

    async def run() -> list[int]:
        engine = Engine(model, EngineConfig(max_batch_delay=0.0))
        engine.start()
        try:
            return await tokens(engine.submit(PROMPTS[0], 5, GREEDY))
        finally:
            engine.stop()

    assert len(asyncio.run(run())) == 5


async def test_a_failed_pass_fails_its_requests_and_the_engine_goes_on(model: LlamaModel) -> None:
    engine = Engine(model, EngineConfig(max_batch_delay=0.0))
    real = model.forward_packed
    calls = 0

    def failing_once(*args: object, **kwargs: object) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("out of memory, say")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    engine.model.forward_packed = failing_once  # type: ignore[method-assign]
    engine.start()
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            await tokens(engine.submit(PROMPTS[0], 3, GREEDY))
        assert await tokens(engine.submit(PROMPTS[0], 3, GREEDY)) == alone(model, PROMPTS[0], 3)
        assert engine.alive()
        assert engine.running == 0
    finally:
        engine.stop()
        del engine.model.forward_packed
