"""A synthetic scaling curve for tests and benchmarks of the autoscaler (not for training).

With `ELASTICLM_SYNTHETIC_SCALING="t1=T1,alpha=ALPHA"` (or `--synthetic-scaling`) each
training step is padded (the worker sleeps after it) to the duration at which the job's
throughput follows throughput(n) = n * T1 / (1 + ALPHA * (n - 1)) tokens/s at world size n,
and the worker reports that duration and throughput. The training itself is real; only
its pace is set. On a shared 2-core machine, where real throughput is noise, it gives an
autoscaler a known, deterministic curve to find: the curve's best size for a given
`minEfficiency` is what a test expects. A step that takes longer than the curve allows is
reported as measured (the curve then shows a slower machine), so choose T1 small enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SYNTHETIC_SCALING_ENV = "ELASTICLM_SYNTHETIC_SCALING"
FORMAT = "t1=<tokens/s of one worker, > 0>,alpha=<0..1>"


@dataclass(frozen=True)
class SyntheticScaling:
    t1: float  # tokens/s of one worker
    alpha: float  # the share of each added worker lost to synchronisation

    def throughput(self, world_size: int) -> float:
        n = max(1, world_size)
        return n * self.t1 / (1 + self.alpha * (n - 1))

    def step_seconds(self, tokens_per_step: int, world_size: int) -> float:
        """How long one step of `tokens_per_step` tokens takes on the curve."""
        return tokens_per_step / self.throughput(world_size)


def parse(text: str) -> SyntheticScaling:
    """`t1=400,alpha=0.25` -> SyntheticScaling; ValueError naming the problem otherwise."""
    fields: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in ("t1", "alpha") or key in fields:
            raise ValueError(
                f"{SYNTHETIC_SCALING_ENV}={text!r}: expected {FORMAT}, got {part.strip()!r}"
            )
        try:
            fields[key] = float(value)
        except ValueError:
            raise ValueError(
                f"{SYNTHETIC_SCALING_ENV}={text!r}: {key} must be a number, got {value!r}"
            ) from None
    if set(fields) != {"t1", "alpha"}:
        raise ValueError(f"{SYNTHETIC_SCALING_ENV}={text!r}: expected {FORMAT}")
    t1, alpha = fields["t1"], fields["alpha"]
    if not (math.isfinite(t1) and t1 > 0):
        raise ValueError(f"{SYNTHETIC_SCALING_ENV}={text!r}: t1 must be > 0")
    if not (math.isfinite(alpha) and 0 <= alpha <= 1):
        raise ValueError(f"{SYNTHETIC_SCALING_ENV}={text!r}: alpha must be within 0..1")
    return SyntheticScaling(t1, alpha)
