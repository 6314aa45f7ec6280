"""Training text → fixed-length sequences, and the resumable global sampler.

The order in which sequences are seen is a pure function of (seed, global sample
number), and step `s` consumes global samples `[s * G, (s + 1) * G)` for the constant
global batch `G`. So after any rescale, failure or restore, a step's batch is the same
no matter how many workers share it: no sample is skipped or seen twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


class DataError(ValueError):
    """The data cannot be used; restarting will not help."""


def read_text(path: str) -> str:
    """A text file, or every *.txt file of a directory in name order."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise DataError(f"data directory {path} holds no *.txt files")
    else:
        raise DataError(
            f"data path {path} does not exist: put a text file (or a directory of *.txt "
            "files) there, e.g. with `python -m lmworker.corpus --out <path>`"
        )
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


@dataclass(frozen=True)
class MicroBatchPlan:
    """Which micro-batches of a step this rank runs (round robin over ranks)."""

    micro_batches: tuple[int, ...]  # indexes within the step
    per_step: int  # micro-batches per step across all ranks


def plan_micro_batches(
    global_batch: int, micro_batch: int, rank: int, world_size: int
) -> MicroBatchPlan:
    if global_batch % micro_batch:
        raise DataError(f"global batch {global_batch} is not a multiple of {micro_batch}")
    per_step = global_batch // micro_batch
    return MicroBatchPlan(tuple(range(rank, per_step, world_size)), per_step)


class TokenSequences:
    """Non-overlapping windows of `length + 1` tokens (inputs and shifted targets)."""

    def __init__(self, tokens: torch.Tensor, length: int) -> None:
        self.length = length
        count = (tokens.numel() - 1) // length
        if count < 1:
            raise DataError(
                f"the data holds {tokens.numel()} tokens, fewer than one sequence of "
                f"{length + 1}; give it more text"
            )
        self.tokens = tokens[: count * length + 1].to(torch.long)
        self.count = count

    def split(self, validation_fraction: float) -> tuple[TokenSequences, TokenSequences | None]:
        held = int(self.count * validation_fraction)
        if held == 0:
            return self, None
        cut = (self.count - held) * self.length
        return (
            TokenSequences(self.tokens[: cut + 1], self.length),
            TokenSequences(self.tokens[cut:], self.length),
        )

    def batch(self, indexes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts = indexes * self.length
        offsets = torch.arange(self.length + 1)
        window = self.tokens[starts[:, None] + offsets[None, :]]
        return window[:, :-1], window[:, 1:]


class GlobalSampler:
    """Global sample number → sequence index: a fresh permutation per epoch."""

    def __init__(self, count: int, seed: int) -> None:
        self.count = count
        self.seed = seed
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.count, generator=gen)
            self._epoch = epoch
        return self._perm

    def indexes(self, first: int, n: int) -> torch.Tensor:
        """Sequence indexes of global samples first .. first + n - 1."""
        out = torch.empty(n, dtype=torch.long)
        for i in range(n):
            g = first + i
            out[i] = self._permutation(g // self.count)[g % self.count]
        return out

    def micro_batch(
        self, step: int, global_batch: int, micro_batch: int, which: int
    ) -> torch.Tensor:
        return self.indexes(step * global_batch + which * micro_batch, micro_batch)
