"""Greedy and simulated annealing as Optuna samplers (Optuna ships neither).

Both are deterministic functions of the study and a seed: the operator rebuilds the
study from status on every pass and makes a new sampler seeded from the job's seed and
the trial's number (`search.trial_seed`), so a rebuilt study proposes the same point.
Until `startup_trials` trials exist, or while none has completed, they sample at random
(`sample_independent`, seeded the same way). Several trials proposed from the same study
state (parallelTrials > 1) are different neighbours of the same point: each trial's
number picks its move.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np
from optuna import Study
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from lmoperator.tuning.space import from_unit, to_unit

# How many candidate moves a sampler tries before it gives up avoiding a point already
# tried and falls back to a random one.
_MAX_TRIES = 64


def _better(study: Study, a: float, b: float) -> bool:
    return a < b if study.direction == StudyDirection.MINIMIZE else a > b


def _completed(study: Study) -> list[FrozenTrial]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: t.number)


def _seen(study: Study, trial: FrozenTrial) -> set[tuple[tuple[str, Any], ...]]:
    return {
        tuple(sorted(t.params.items()))
        for t in study.get_trials(deepcopy=False)
        if t.number != trial.number and t.params
    }


class _NeighbourhoodSampler(BaseSampler):
    """What Greedy and annealing share: the space, the seed, random start-up."""

    def __init__(
        self, search_space: dict[str, BaseDistribution], seed: int, startup_trials: int
    ) -> None:
        self._space = dict(search_space)
        self._seed = seed
        self._startup = startup_trials
        self._random = RandomSampler(seed=seed)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial.number < self._startup or not _completed(study):
            return {}
        seen = _seen(study, trial)
        for attempt in range(_MAX_TRIES):
            proposal = self._propose(study, trial, attempt)
            if proposal is not None and tuple(sorted(proposal.items())) not in seen:
                return proposal
        return {}  # every neighbour was tried: a random point

    @abc.abstractmethod
    def _propose(self, study: Study, trial: FrozenTrial, attempt: int) -> dict[str, Any] | None:
        """A neighbour (attempt 0, then others if it was tried already), or None."""


def _move(dist: BaseDistribution, value: Any, delta: float) -> Any:
    """`value` moved by `delta` (a share of the range; categorical: that many choices)."""
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        shift = int(math.copysign(max(1, round(abs(delta))), delta)) if delta else 0
        return choices[(choices.index(value) + shift) % len(choices)]
    assert isinstance(dist, FloatDistribution | IntDistribution)
    return from_unit(dist, to_unit(dist, value) + delta)


class GreedySampler(_NeighbourhoodSampler):
    """Coordinate-wise hill climbing from the best point so far.

    From the best completed trial, move one parameter at a time by `neighbourhood_scale`
    of its range, up then down, parameter after parameter. The k-th move tried since that
    point became the best is parameter k // 2 (cycling), direction + for even k and - for
    odd; after every full sweep (2 moves per parameter) without an improvement the step
    is halved. A better trial becomes the new point and the sweep starts again. Trials
    proposed together (parallelTrials) take consecutive moves: different neighbours.
    """

    def __init__(
        self,
        search_space: dict[str, BaseDistribution],
        seed: int,
        startup_trials: int,
        neighbourhood_scale: float,
    ) -> None:
        super().__init__(search_space, seed, startup_trials)
        self._scale = neighbourhood_scale

    def _propose(self, study: Study, trial: FrozenTrial, attempt: int) -> dict[str, Any] | None:
        completed = _completed(study)
        center = completed[0]
        for t in completed[1:]:
            if _better(study, t.value, center.value):  # type: ignore[arg-type]
                center = t
        names = sorted(self._space)
        moves = sum(
            1 for t in study.get_trials(deepcopy=False) if center.number < t.number < trial.number
        )
        k = moves + attempt
        sweep = 2 * len(names)
        name = names[(k // 2) % len(names)]
        direction = 1.0 if k % 2 == 0 else -1.0
        dist = self._space[name]
        if isinstance(dist, CategoricalDistribution):
            delta = direction * (1 + k // sweep)
        else:
            delta = direction * self._scale * 0.5 ** (k // sweep)
        proposal = dict(center.params)
        proposal[name] = _move(dist, center.params[name], delta)
        return proposal if proposal != center.params else None


class AnnealingSampler(_NeighbourhoodSampler):
    """Simulated annealing over the completed trials, replayed in order.

    The chain's current point starts at the first completed trial. Each later completed
    trial t replaces it when better, or when worse with probability
    exp(-Δ / T(t)), Δ being how much worse it is relative to |current| (so temperatures
    need no unit), the draw seeded by (seed, t's number): replaying the same trials gives
    the same chain. A new trial is the current point with every range parameter moved by a
    normal step of neighbourhood_scale x (T / T0) of its range (at least 5 % of the scale),
    and each categorical one changed with probability neighbourhood_scale.
    T(n) = T0 x rate^n (Exponential) or T0 x (1 - n / maxTrials) (Linear).
    """

    def __init__(
        self,
        search_space: dict[str, BaseDistribution],
        seed: int,
        startup_trials: int,
        *,
        initial_temperature: float,
        cooling: str,
        cooling_rate: float,
        neighbourhood_scale: float,
        max_trials: int,
        chain_seed: int,
    ) -> None:
        super().__init__(search_space, seed, startup_trials)
        self._t0 = initial_temperature
        self._cooling = cooling
        self._rate = cooling_rate
        self._scale = neighbourhood_scale
        self._max_trials = max_trials
        self._chain_seed = chain_seed

    def temperature(self, number: int) -> float:
        if self._cooling == "Linear":
            return self._t0 * max(0.0, 1.0 - number / self._max_trials)
        return self._t0 * self._rate**number

    def current(self, study: Study) -> FrozenTrial:
        """The chain's point after replaying every completed trial."""
        completed = _completed(study)
        current = completed[0]
        for t in completed[1:]:
            value, now = t.value, current.value
            # Completed trials have values.
            assert value is not None
            assert now is not None
            if _better(study, value, now) or value == now:
                current = t
                continue
            worse = abs(value - now) / max(abs(now), 1e-12)
            temperature = self.temperature(t.number)
            rng = np.random.RandomState((self._chain_seed * 1_000_003 + t.number) % 2**32)
            if temperature > 0 and rng.random_sample() < math.exp(-worse / temperature):
                current = t
        return current

    def _propose(self, study: Study, trial: FrozenTrial, attempt: int) -> dict[str, Any] | None:
        point = self.current(study)
        rng = np.random.RandomState((self._seed + attempt * 7919) % 2**32)
        spread = self._scale * max(math.sqrt(self.temperature(trial.number) / self._t0), 0.1)
        proposal = dict(point.params)
        for name in sorted(self._space):
            dist = self._space[name]
            if isinstance(dist, CategoricalDistribution):
                if len(dist.choices) > 1 and rng.random_sample() < self._scale:
                    others = [c for c in dist.choices if c != point.params[name]]
                    proposal[name] = others[rng.randint(len(others))]
            else:
                proposal[name] = _move(dist, point.params[name], rng.normal(0.0, spread))
        return proposal if proposal != point.params else None
