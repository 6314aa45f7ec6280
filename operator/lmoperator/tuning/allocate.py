"""Workers for the running trials under spec.budget.maxReplicas.

Every running trial keeps its minimum and its warm spares (the API guarantees
parallelTrials x (minReplicas + warmSpares) fit): a spare holds a pod's resources like a
worker, so it uses the budget like one. What is left goes to the trials in the order of
their objective, best first, each up to its maximum: the leader grows first. Trials
without an objective yet come last, in number order. An early-stopped or finished trial
is not running, so its workers are free at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RunningTrial:
    name: str
    number: int
    min_replicas: int
    max_replicas: int
    replicas: int  # what it has now
    value: float | None  # its latest objective


@dataclass(frozen=True)
class Allocation:
    name: str
    replicas: int
    reason: str


def allocate(
    max_replicas: int,
    trials: Sequence[RunningTrial],
    maximize: bool = False,
    spares_per_trial: int = 0,
) -> list[Allocation]:
    """The workers of each running trial, with the reason for each one that changes.

    `spares_per_trial` (spec.trialTemplate.elastic.warmSpares) come off the budget first.
    """
    sign = -1.0 if maximize else 1.0

    def rank_key(t: RunningTrial) -> tuple[int, float, int]:
        if t.value is None or not math.isfinite(t.value):
            return (1, 0.0, t.number)
        return (0, sign * t.value, t.number)

    ranked = sorted(trials, key=rank_key)
    left = max_replicas - sum(t.min_replicas + spares_per_trial for t in ranked)
    shared = f"{max_replicas} workers shared" + (
        f" ({spares_per_trial} warm spare(s) per trial included)" if spares_per_trial else ""
    )
    answer = []
    for position, t in enumerate(ranked, 1):
        extra = max(0, min(left, t.max_replicas - t.min_replicas))
        left -= extra
        replicas = t.min_replicas + extra
        figure = "no objective yet" if t.value is None else f"objective {t.value:.4g}"
        standing = f"rank {position} of {len(ranked)} ({figure})"
        if replicas > t.replicas:
            reason = f"Leading: {standing}; {shared}"
        elif replicas < t.replicas:
            reason = f"Trailing: {standing}; {shared}"
        else:
            reason = ""
        answer.append(Allocation(t.name, replicas, reason))
    return sorted(answer, key=lambda a: a.name)
