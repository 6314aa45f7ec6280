"""Choosing each sequence's next token from its logits, with its own settings.

Every request carries its own temperature, top-p, top-k and random generator (seeded by
the request's `seed`, or at random), so a seeded request gives the same text whichever
requests share its batch. Temperature 0 is greedy. The order is the one transformers
and vLLM use: temperature, then top-k, then top-p, then a draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0  # 1: off
    top_k: int = 0  # 0: off

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """One row of logits [vocab], scaled by temperature and cut to top-k / top-p."""
    logits = logits / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        # Drop a token once the more likely ones already reach top_p; the first one stays.
        drop = cumulative - torch.softmax(ordered, dim=-1) >= params.top_p
        drop[0] = False
        dropped = torch.zeros_like(drop).scatter(0, order, drop)  # back to vocabulary order
        logits = logits.masked_fill(dropped, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator],
) -> list[int]:
    """Next token of each row of logits [rows, vocab] (float32)."""
    chosen = logits.argmax(dim=-1).tolist()
    for row, p in enumerate(params):
        if p.greedy:
            continue
        probs = torch.softmax(filter_logits(logits[row], p), dim=-1)
        chosen[row] = int(torch.multinomial(probs, 1, generator=generators[row]))
    return [int(t) for t in chosen]
