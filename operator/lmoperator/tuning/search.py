"""The search, rebuilt from the trials recorded in status on every pass.

The operator keeps no study in memory: `build_study` turns the recorded trials (finished
ones with their objective, early-stopped ones with their history, running ones as
running) into a fresh in-memory Optuna study, and each decision is a pure function of it.
A suggestion's sampler is seeded from the job's seed and the trial's number
(`trial_seed`), so a study rebuilt after an operator restart proposes the same next point
as the one before it would have.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.pruners import BasePruner, MedianPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import TrialState as OptunaState
from optuna.trial import create_trial

from lmoperator.api.tuningjob import (
    TUNABLE_FIELDS,
    AlgorithmName,
    EarlyStoppingPolicy,
    Goal,
    LMTuningJobSpec,
    ParameterType,
    TrialState,
)
from lmoperator.tuning.samplers import AnnealingSampler, GreedySampler
from lmoperator.tuning.space import grid, search_space, to_unit

optuna.logging.set_verbosity(optuna.logging.WARNING)

_STATES = {
    TrialState.RUNNING: OptunaState.RUNNING,
    TrialState.SUCCEEDED: OptunaState.COMPLETE,
    TrialState.FAILED: OptunaState.FAIL,
    TrialState.EARLY_STOPPED: OptunaState.PRUNED,
}
# A best value this close to an end of its range (a share of the range, of its logarithm
# for log: true) is "at the edge".
EDGE = 0.05


@dataclass(frozen=True)
class Observation:
    """One trial as the search sees it (from a TrialRecord in status)."""

    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None = None
    history: tuple[tuple[int, float], ...] = field(default=())


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial `number`'s suggestion: well mixed, the same on every pass."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def direction(spec: LMTuningJobSpec) -> StudyDirection:
    return (
        StudyDirection.MAXIMIZE
        if spec.objective.direction == Goal.MAXIMIZE
        else StudyDirection.MINIMIZE
    )


def make_sampler(spec: LMTuningJobSpec, number: int) -> BaseSampler:
    """The sampler that proposes trial `number`."""
    a = spec.algorithm
    seed = trial_seed(a.seed, number)
    space = search_space(spec.parameters)
    if a.name == AlgorithmName.GRID:
        # The grid's order comes from the seed, so it is the job's seed, not the trial's:
        # trial n (n < the grid's size) takes the n-th point of that order.
        return GridSampler(grid(spec.parameters), seed=a.seed)
    if a.name == AlgorithmName.RANDOM:
        return RandomSampler(seed=seed)
    if a.name == AlgorithmName.GREEDY:
        return GreedySampler(space, seed, a.startup_trials, a.greedy.neighbourhood_scale)
    if a.name == AlgorithmName.SIMULATED_ANNEALING:
        s = a.simulated_annealing
        return AnnealingSampler(
            space,
            seed,
            a.startup_trials,
            initial_temperature=s.initial_temperature,
            cooling=s.cooling.value,
            cooling_rate=s.cooling_rate,
            neighbourhood_scale=s.neighbourhood_scale,
            max_trials=spec.budget.max_trials,
            chain_seed=a.seed,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: trials still running count as bad guesses, so trials proposed
        # together do not pile onto one point.
        return TPESampler(seed=seed, n_startup_trials=a.startup_trials, constant_liar=True)


def _grid_size(spec: LMTuningJobSpec) -> int:
    return math.prod(len(values) for values in grid(spec.parameters).values())


def build_study(
    spec: LMTuningJobSpec,
    trials: Sequence[Observation],
    sampler: BaseSampler | None = None,
    pruner: BasePruner | None = None,
    system_attrs: Mapping[int, dict[str, Any]] | None = None,
) -> optuna.Study:
    """A fresh in-memory study holding the recorded trials, numbered 0, 1, ... as in
    status (Optuna numbers trials by position, so a gap would shift every seed)."""
    numbers = sorted(t.number for t in trials)
    if numbers != list(range(len(numbers))):
        raise ValueError(f"trial numbers must be 0..{len(numbers) - 1}, got {numbers}")
    study = optuna.create_study(
        direction=direction(spec),
        sampler=sampler or RandomSampler(seed=0),
        pruner=pruner or optuna.pruners.NopPruner(),
    )
    space = search_space(spec.parameters)
    for t in sorted(trials, key=lambda t: t.number):
        state = _STATES[t.state]
        if not t.params:
            # A trial of parameters since changed: it keeps its number, and guides nothing.
            state = OptunaState.FAIL if state != OptunaState.RUNNING else state
        value = t.value if state == OptunaState.COMPLETE else None
        if state == OptunaState.COMPLETE and (value is None or not math.isfinite(value)):
            state, value = OptunaState.FAIL, None
        attrs: dict[str, Any] = dict((system_attrs or {}).get(t.number, {}))
        if spec.algorithm.name == AlgorithmName.GRID and t.number < _grid_size(spec):
            # What GridSampler recorded when it proposed the trial: grid point n.
            attrs.update(search_space=grid(spec.parameters), grid_id=t.number)
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params=t.params,
                distributions=space if t.params else {},
                intermediate_values=dict(t.history),
                system_attrs=attrs,
            )
        )
    return study


def suggest(spec: LMTuningJobSpec, trials: Sequence[Observation]) -> dict[str, Any]:
    """The parameters of the next trial (number len(trials)), from the trials so far."""
    study = build_study(spec, trials, sampler=make_sampler(spec, len(trials)))
    trial = study.ask(search_space(spec.parameters))
    return dict(trial.params)


# --------------------------------------------------------------------------------------
# Early stopping


def _rung_attrs(
    history: Sequence[tuple[int, float]], min_resource: int, factor: int
) -> dict[str, float]:
    """SuccessiveHalvingPruner's record of the rungs a trial passed: the value at the first
    checkpoint at or past each rung's step (min_resource x factor^k)."""
    attrs: dict[str, float] = {}
    rung = 0
    for step, value in history:
        while step >= min_resource * factor**rung:
            attrs[f"completed_rung_{rung}"] = value
            rung += 1
    return attrs


WARMUP_PATH = "training.warmupSteps"


def warmup_steps(spec: LMTuningJobSpec, params: Mapping[str, Any]) -> int:
    """The warm-up of a trial with `params`: its own when a parameter sets it, else the
    template's (whose default, as the training job's, is 5 % of the steps)."""
    for p in spec.parameters:
        if p.path == WARMUP_PATH and p.name in params:
            return round(float(params[p.name]))
    t = spec.trial_template.training
    return t.warmup_steps if t.warmup_steps is not None else t.steps * 5 // 100


def stop_reason(spec: LMTuningJobSpec, trials: Sequence[Observation], number: int) -> str | None:
    """Why running trial `number` should stop now, or None to let it go on.

    No trial is judged before `minSteps`, nor before the end of its own learning-rate
    warm-up: a trial still warming up has a higher loss than one that has finished
    its warm-up by construction, not because its parameters are worse, so comparing the
    two at the same step stops long warm-ups for being long (and when warm-up is a
    parameter, biases the search against it)."""
    policy = spec.early_stopping.policy
    current = next((t for t in trials if t.number == number), None)
    if policy == EarlyStoppingPolicy.NONE or current is None or not current.history:
        return None
    es = spec.early_stopping
    step, value = current.history[-1]
    if step < es.min_steps or step <= warmup_steps(spec, current.params):
        return None
    if policy == EarlyStoppingPolicy.MEDIAN:
        pruner: BasePruner = MedianPruner(
            n_startup_trials=es.min_completed_trials,
            n_warmup_steps=es.min_steps,
            n_min_trials=es.min_completed_trials,
        )
        study = build_study(spec, trials, pruner=pruner)
    else:
        min_resource = max(es.min_steps, 1)
        pruner = SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=es.reduction_factor
        )
        rungs = {
            # The judged trial's last point is judged now; its earlier ones were before.
            t.number: _rung_attrs(
                t.history[:-1] if t.number == number else t.history,
                min_resource,
                es.reduction_factor,
            )
            for t in trials
        }
        study = build_study(spec, trials, pruner=pruner, system_attrs=rungs)
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    if not pruner.prune(study, frozen):
        return None
    if policy == EarlyStoppingPolicy.MEDIAN:
        others = [
            t.history_value(step)
            for t in map(_Indexed, trials)
            if t.obs.state == TrialState.SUCCEEDED and t.history_value(step) is not None
        ]
        median = statistics.median([v for v in others if v is not None])
        return (
            f"Median: {value:.4g} at step {step} is worse than the median {median:.4g} of "
            f"{len(others)} completed trials at that step"
        )
    return (
        f"SuccessiveHalving: {value:.4g} at step {step} is not among the best "
        f"1/{es.reduction_factor} of the trials that reached that rung"
    )


class _Indexed:
    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        self._by_step = dict(obs.history)

    def history_value(self, step: int) -> float | None:
        return self._by_step.get(step)


# --------------------------------------------------------------------------------------
# The result


def best(spec: LMTuningJobSpec, trials: Sequence[Observation]) -> Observation | None:
    """The best succeeded trial (the lowest number among equals), or None."""
    done = [
        t
        for t in trials
        if t.state == TrialState.SUCCEEDED and t.value is not None and math.isfinite(t.value)
    ]
    if not done:
        return None
    sign = -1.0 if spec.objective.direction == Goal.MAXIMIZE else 1.0
    return min(done, key=lambda t: (sign * (t.value or 0.0), t.number))


def range_warnings(spec: LMTuningJobSpec, point: dict[str, Any]) -> list[str]:
    """Where `point` (the best trial's parameters) sits at the edge of a range that could
    be widened (not at a bound of the field itself, such as a warm-up of 0 steps)."""
    found = []
    space = search_space(spec.parameters)
    for p in sorted(spec.parameters, key=lambda p: p.name):
        dist = space[p.name]
        if p.type == ParameterType.CATEGORICAL or not isinstance(
            dist, FloatDistribution | IntDistribution
        ):
            continue
        u = to_unit(dist, point[p.name])
        field = TUNABLE_FIELDS.get(p.path)
        floor = field.minimum if field is not None else None
        ceiling = field.maximum if field is not None else None
        if u >= 1.0 - EDGE and not (ceiling is not None and p.max is not None and p.max >= ceiling):
            found.append(f"widen {p.name} above {p.max:g}")
        elif u <= EDGE and not (floor is not None and p.min is not None and p.min <= floor):
            found.append(f"widen {p.name} below {p.min:g}")
    return found
