"""forward_packed with a SlotKVCache gives the logits of the plain KV-cache path."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmworker.model import LlamaModel
from lmworker.slot_cache import PackedBatch, SlotKVCache
from tests.tiny_models import TINY, tiny_model


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


def reference_logits(model: LlamaModel, tokens: list[int]) -> torch.Tensor:
    """Logits of every position, from one plain forward."""
    with torch.no_grad():
        out: torch.Tensor = model(torch.tensor([tokens]))[0]
        return out


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_mixed_prefill_and_decode_match_the_plain_forward(kv_heads: int) -> None:
    model = tiny_model(dataclasses.replace(TINY, kv_heads=kv_heads), sharpness=1.0)
    sequences = {3: [5, 6, 7, 8], 0: [1, 2], 2: [9, 10, 11, 12, 13, 14], 1: [42]}
    cache = model.new_slot_cache(4, 32)
    # Pass 1: slots 3 and 0 prefill their first tokens (0's whole prompt is one token).
    with torch.no_grad():
        model.forward_packed(torch.tensor([5, 6, 7, 1]), [3, 0], [3, 1], cache)
        # Pass 2: slot 3 and 0 decode one token each (non-consecutive slots: a gather),
        # slot 2 prefills, slot 1 prefills one token.
        logits = model.forward_packed(
            torch.tensor([2, 8, 9, 10, 11, 12, 13, 14, 42]), [0, 3, 2, 1], [1, 1, 6, 1], cache
        )
    assert cache.lengths == [2, 1, 6, 4]
    for row, slot in enumerate([0, 3, 2, 1]):
        expected = reference_logits(model, sequences[slot])[-1]
        torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=1e-5)


def test_consecutive_decoding_slots_read_the_cache_as_a_view() -> None:
    model = tiny_model(sharpness=1.0)
    cache = model.new_slot_cache(3, 32)
    with torch.no_grad():
        model.forward_packed(torch.tensor([1, 2, 3, 4, 5, 6]), [0, 1, 2], [2, 2, 2], cache)
        batch = PackedBatch.build([0, 1, 2], [1, 1, 1], cache)
        assert batch.decode_slot_range == (0, 3)
        assert batch.runs == ()
        logits = model.forward_packed(torch.tensor([7, 8, 9]), [0, 1, 2], [1, 1, 1], cache)
    for row, seq in enumerate([[1, 2, 7], [3, 4, 8], [5, 6, 9]]):
        torch.testing.assert_close(
            logits[row], reference_logits(model, seq)[-1], atol=1e-5, rtol=1e-5
        )


def test_a_prompt_continuing_a_cached_prefix() -> None:
    model = tiny_model(sharpness=1.0)
    cache = model.new_slot_cache(1, 32)
    with torch.no_grad():
        model.forward_packed(torch.tensor([1, 2, 3]), [0], [3], cache)
        logits = model.forward_packed(torch.tensor([4, 5, 6]), [0], [3], cache)
    torch.testing.assert_close(
        logits[0], reference_logits(model, [1, 2, 3, 4, 5, 6])[-1], atol=1e-5, rtol=1e-5
    )


def test_the_cache_grows_and_keeps_what_it_held() -> None:
    model = tiny_model(sharpness=1.0)
    cache = SlotKVCache(model.cfg, 2, 100, initial_capacity=4)
    tokens = list(range(1, 12))
    with torch.no_grad():
        model.forward_packed(torch.tensor(tokens[:3]), [1], [3], cache)
        assert cache.capacity == 4
        for i, token in enumerate(tokens[3:], start=3):
            logits = model.forward_packed(torch.tensor([token]), [1], [1], cache)
            torch.testing.assert_close(
                logits[0], reference_logits(model, tokens[: i + 1])[-1], atol=1e-5, rtol=1e-5
            )
    assert cache.capacity == 16
    assert cache.lengths == [0, 11]
    cache.release(1)
    assert cache.lengths == [0, 0]


def test_limits() -> None:
    model = tiny_model()
    cache = model.new_slot_cache(2, 8)
    with pytest.raises(ValueError, match="8 positions"), torch.no_grad():
        model.forward_packed(torch.tensor(list(range(9))), [0], [9], cache)
    with pytest.raises(ValueError, match="twice"):
        PackedBatch.build([1, 1], [1, 1], cache)
    with pytest.raises(ValueError, match="at least one token"):
        PackedBatch.build([0], [0], cache)
    with pytest.raises(ValueError, match="sum"), torch.no_grad():
        model.forward_packed(torch.tensor([1, 2]), [0], [1], cache)
