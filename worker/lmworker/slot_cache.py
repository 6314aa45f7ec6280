"""The server's KV cache: one slot per sequence, each with its own length.

`LlamaModel.forward_packed` runs the sequences of a continuous batch in one pass: their
new tokens are concatenated without padding (`PackedBatch` says where each goes), new
keys and values land in each sequence's slot, and attention reads each slot up to its
own length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmworker.config import ModelConfig


class SlotKVCache:
    """Keys and values of independent sequences, one slot each, with a length per slot.

    A server decodes many sequences that started at different times; each owns a slot
    while it runs. `lengths[slot]` counts the positions stored for it; `forward_packed`
    appends and advances it, and `release` empties the slot for the next sequence. The
    storage grows (doubling, up to `max_length`) as the longest sequence does, so memory
    follows what is in use rather than slots x the full context.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        slots: int,
        max_length: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        initial_capacity: int = 128,
    ) -> None:
        if slots <= 0 or max_length <= 0:
            raise ValueError(f"slots ({slots}) and max_length ({max_length}) must be positive")
        self.cfg = cfg
        self.slots = slots
        self.max_length = max_length
        self.dtype = dtype
        self.device = device
        self.lengths = [0] * slots
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.reserve(min(initial_capacity, max_length))

    def reserve(self, length: int) -> None:
        """Make room for `length` positions in every slot."""
        if length > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions; {length} were needed")
        if length <= self.capacity:
            return
        capacity = min(self.max_length, max(length, 2 * self.capacity))
        head_dim = self.cfg.hidden_size // self.cfg.heads
        shape = (self.slots, self.cfg.kv_heads, capacity, head_dim)
        grown_keys, grown_values = [], []
        for layer in range(self.cfg.layers):
            k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.capacity:
                k[:, :, : self.capacity] = self.keys[layer]
                v[:, :, : self.capacity] = self.values[layer]
            grown_keys.append(k)
            grown_values.append(v)
        self.keys, self.values = grown_keys, grown_values
        self.capacity = capacity

    def release(self, slot: int) -> None:
        self.lengths[slot] = 0


@dataclass(frozen=True)
class PackedBatch:
    """Where the tokens of one `forward_packed` call go, computed once for all layers.

    The tokens of all sequences are concatenated (no padding). A sequence extending its
    slot by one token (decoding) joins one batched attention call with the others; a
    longer run (a prompt) attends on its own with a causal mask.
    """

    positions: torch.Tensor  # [N] position of each token in its sequence
    token_slots: torch.Tensor  # [N] slot of each token
    last_tokens: torch.Tensor  # [S] index of each sequence's last token
    decode_tokens: torch.Tensor  # [D] tokens of the one-token sequences
    decode_slots: torch.Tensor  # [D] their slots
    decode_slot_range: tuple[int, int] | None  # (first, end) when they are consecutive
    decode_mask: torch.Tensor  # [D, 1, 1, span] True where a key is this row's
    decode_span: int
    runs: tuple[tuple[int, int, int, int], ...]  # (first token, count, slot, cached before)

    @classmethod
    def build(
        cls,
        slots: Sequence[int],
        counts: Sequence[int],
        cache: SlotKVCache,
        device: torch.device | str | None = None,
    ) -> PackedBatch:
        if len(slots) != len(counts) or not slots:
            raise ValueError("slots and counts must be non-empty and of equal length")
        if len(set(slots)) != len(slots):
            raise ValueError(f"a slot appears twice in one batch: {list(slots)}")
        positions: list[int] = []
        token_slots: list[int] = []
        last: list[int] = []
        decode_tokens: list[int] = []
        decode_slots: list[int] = []
        decode_ends: list[int] = []
        runs: list[tuple[int, int, int, int]] = []
        for slot, count in zip(slots, counts, strict=True):
            if count <= 0:
                raise ValueError(f"slot {slot}: a sequence must bring at least one token")
            past = cache.lengths[slot]
            first = len(positions)
            positions.extend(range(past, past + count))
            token_slots.extend([slot] * count)
            last.append(first + count - 1)
            if count == 1:
                decode_tokens.append(first)
                decode_slots.append(slot)
                decode_ends.append(past + 1)
            else:
                runs.append((first, count, slot, past))
        span = max(decode_ends, default=0)
        consecutive = (
            decode_slots == list(range(decode_slots[0], decode_slots[-1] + 1))
            if (decode_slots)
            else False
        )
        ends = torch.tensor(decode_ends, dtype=torch.int64, device=device)
        mask = torch.arange(span, device=device)[None, :] < ends[:, None]

        def longs(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=device)

        return cls(
            positions=longs(positions),
            token_slots=longs(token_slots),
            last_tokens=longs(last),
            decode_tokens=longs(decode_tokens),
            decode_slots=longs(decode_slots),
            decode_slot_range=(decode_slots[0], decode_slots[-1] + 1) if consecutive else None,
            decode_mask=mask[:, None, None, :],
            decode_span=span,
            runs=tuple(runs),
        )
