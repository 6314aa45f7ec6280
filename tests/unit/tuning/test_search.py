"""The search core on known functions: convergence within stated budgets, repeatability,
the study rebuilt from status, early stopping, range warnings and worker sharing."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from lmoperator.api.tuningjob import LMTuningJobSpec, TrialState
from lmoperator.tuning.allocate import RunningTrial, allocate
from lmoperator.tuning.search import (
    Observation,
    best,
    range_warnings,
    stop_reason,
    suggest,
    trial_seed,
)
from lmoperator.tuning.space import from_text, to_text
from tests.unit.tuning.helpers import (
    best_value,
    rosenbrock,
    run_search,
    shifted_quadratic,
    spec_for,
)

NEIGHBOURHOOD = ["Greedy", "SimulatedAnnealing"]
SEEDS = range(8)


@pytest.mark.parametrize("algorithm", NEIGHBOURHOOD)
def test_the_shifted_quadratic_is_found_within_60_trials(algorithm: str) -> None:
    """Minimum 0 at (1.3, 2.2) in [0, 4]^2: below 0.01 within 60 trials, every seed."""
    for seed in SEEDS:
        trials = run_search(spec_for(algorithm, seed=seed), shifted_quadratic, 60)
        assert best_value(trials) < 0.01, (algorithm, seed)


@pytest.mark.parametrize("algorithm", NEIGHBOURHOOD)
def test_rosenbrock_improves_tenfold_after_the_random_start(algorithm: str) -> None:
    """Rosenbrock's curved valley (minimum 0 at (3, 3)): the median best over 8 seeds after
    60 trials is below 2, and at most a tenth of the best of the 4 random start-up trials."""
    finals, starts = [], []
    for seed in SEEDS:
        trials = run_search(spec_for(algorithm, seed=seed), rosenbrock, 60)
        starts.append(best_value(trials, 4))
        finals.append(best_value(trials))
    assert statistics.median(finals) < 2.0
    assert statistics.median(finals) <= statistics.median(starts) / 10


@pytest.mark.parametrize("algorithm", ["Random", "Bayesian", *NEIGHBOURHOOD])
def test_the_same_seed_gives_the_same_trials(algorithm: str) -> None:
    one = run_search(spec_for(algorithm, seed=3), shifted_quadratic, 12)
    two = run_search(spec_for(algorithm, seed=3), shifted_quadratic, 12)
    other = run_search(spec_for(algorithm, seed=4), shifted_quadratic, 12)
    assert [t.params for t in one] == [t.params for t in two]
    assert [t.params for t in one] != [t.params for t in other]


@pytest.mark.parametrize("algorithm", ["Random", "Bayesian", "Grid", *NEIGHBOURHOOD])
def test_a_study_rebuilt_from_status_text_suggests_the_same_next_point(algorithm: str) -> None:
    """What a restarted operator does: read the trials back from status (values as text,
    one still running) and suggest the next trial."""
    params: list[dict[str, Any]] = [
        {
            "name": "x",
            "path": "training.weightDecay",
            "type": "Float",
            "min": 0,
            "max": 4,
            "step": 0.5,
        },
        {
            "name": "y",
            "path": "training.warmupSteps",
            "type": "Int",
            "min": 0,
            "max": 40,
            "step": 10,
        },
        {
            "name": "p",
            "path": "training.precision",
            "type": "Categorical",
            "values": ["fp32", "bf16"],
        },
    ]
    spec = spec_for(algorithm, parameters=params, seed=11, parallel=2)

    def f(p: dict[str, Any]) -> float:
        bf16 = 1.0 if p["p"] == "bf16" else 0.0
        return shifted_quadratic({"x": p["x"], "y": float(p["y"]) / 10}) + bf16

    done = run_search(spec, f, 7)
    running = Observation(7, suggest(spec, done), TrialState.RUNNING)
    expected = suggest(spec, [*done, running])
    by_name = {p.name: p for p in spec.parameters}
    reread = [
        Observation(
            t.number,
            {k: from_text(by_name[k], to_text(v)) for k, v in t.params.items()},
            t.state,
            t.value,
        )
        for t in [*done, running]
    ]
    assert suggest(spec, reread) == expected
    assert expected != running.params  # the running trial counts: no duplicate


def test_parallel_neighbourhood_trials_are_different_neighbours() -> None:
    spec = spec_for("Greedy", seed=1, parallel=3)
    trials = run_search(spec, shifted_quadratic, 30)
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == len(points)
    assert best_value(trials) < 0.05


def test_grid_covers_the_grid_without_repeats() -> None:
    params: list[dict[str, Any]] = [
        {
            "name": "x",
            "path": "training.weightDecay",
            "type": "Float",
            "min": 0,
            "max": 1,
            "step": 0.5,
        },
        {
            "name": "y",
            "path": "training.warmupSteps",
            "type": "Int",
            "min": 0,
            "max": 10,
            "step": 10,
        },
    ]
    spec = spec_for("Grid", parameters=params)
    trials = run_search(spec, lambda p: float(p["x"]), 6)
    points = [(t.params["x"], t.params["y"]) for t in trials]
    assert sorted(points) == [(0.0, 0), (0.0, 10), (0.5, 0), (0.5, 10), (1.0, 0), (1.0, 10)]
    again = run_search(spec, lambda p: float(p["x"]), 6)
    assert [(t.params["x"], t.params["y"]) for t in again] == points


def test_trial_seeds_differ_by_job_and_number() -> None:
    seeds = {trial_seed(job, n) for job in range(5) for n in range(50)}
    assert len(seeds) == 250


# -- early stopping -----------------------------------------------------------------------


def curve(final: float, steps: tuple[int, ...] = (20, 40, 60)) -> tuple[tuple[int, float], ...]:
    return tuple((s, final + 2.0 * (60 - s) / 60) for s in steps)


def finished(number: int, final: float) -> Observation:
    return Observation(number, {"x": 1.0, "y": 1.0}, TrialState.SUCCEEDED, final, curve(final))


def running(number: int, history: tuple[tuple[int, float], ...]) -> Observation:
    return Observation(number, {"x": 2.0, "y": 2.0}, TrialState.RUNNING, None, history)


def stopping(policy: str, **settings: object) -> LMTuningJobSpec:
    spec = spec_for("Random")
    return spec.model_copy(
        update={
            "early_stopping": spec.early_stopping.model_copy(update={"policy": policy, **settings})
        }
    )


def test_median_stops_a_trial_worse_than_the_completed_median() -> None:
    spec = stopping("Median", min_steps=20, min_completed_trials=2)
    done = [finished(0, 2.0), finished(1, 2.4)]
    bad = running(2, ((20, 9.0),))
    reason = stop_reason(spec, [*done, bad], 2)
    assert reason is not None
    assert reason.startswith("Median: 9 at step 20 is worse than the median 3.533 of 2 completed")
    good = running(2, ((20, 3.0),))
    assert stop_reason(spec, [*done, good], 2) is None


def test_median_waits_for_enough_completed_trials_and_min_steps() -> None:
    spec = stopping("Median", min_steps=40, min_completed_trials=2)
    bad = running(2, ((20, 9.0),))
    assert stop_reason(spec, [finished(0, 2.0), finished(1, 2.4), bad], 2) is None
    assert stop_reason(spec, [finished(0, 2.0), running(1, ((40, 9.0),))], 1) is None


def test_no_trial_is_judged_before_the_end_of_its_warm_up() -> None:
    parameters = [
        {"name": "x", "path": "training.weightDecay", "type": "Float", "min": 0, "max": 4},
        {"name": "w", "path": "training.warmupSteps", "type": "Int", "min": 0, "max": 40},
    ]
    spec = spec_for("Random", parameters)
    spec = spec.model_copy(
        update={
            "early_stopping": spec.early_stopping.model_copy(
                update={"policy": "Median", "min_steps": 0, "min_completed_trials": 2}
            )
        }
    )
    done = [
        Observation(n, {"x": 1.0, "w": 0}, TrialState.SUCCEEDED, final, curve(final))
        for n, final in ((0, 2.0), (1, 2.4))
    ]

    def warming(w: int) -> Observation:
        return Observation(2, {"x": 2.0, "w": w}, TrialState.RUNNING, None, ((20, 9.0),))

    # Its learning rate still ramps up at step 20: a high loss says nothing yet.
    assert stop_reason(spec, [*done, warming(30)], 2) is None
    assert stop_reason(spec, [*done, warming(20)], 2) is None
    assert stop_reason(spec, [*done, warming(10)], 2) is not None
    # Without a warm-up parameter, the template's warm-up (5 steps in the example) counts.
    template_spec = stopping("Median", min_steps=0, min_completed_trials=2)
    steps = (5, 10, 20, 40, 60)
    done = [
        Observation(n, {"x": 1.0, "y": 1.0}, TrialState.SUCCEEDED, f, curve(f, steps))
        for n, f in ((0, 2.0), (1, 2.4))
    ]
    assert stop_reason(template_spec, [*done, running(2, ((5, 9.0),))], 2) is None
    assert stop_reason(template_spec, [*done, running(2, ((5, 9.0), (10, 9.0)))], 2) is not None


def test_successive_halving_keeps_the_best_third_at_a_rung() -> None:
    spec = stopping("SuccessiveHalving", min_steps=20, reduction_factor=3)
    done = [finished(i, 2.0 + i) for i in range(5)]
    bad = running(5, ((20, 9.0),))
    reason = stop_reason(spec, [*done, bad], 5)
    assert reason is not None
    assert reason.startswith("SuccessiveHalving: 9 at step 20")
    good = running(5, ((20, 2.5),))
    assert stop_reason(spec, [*done, good], 5) is None


def test_no_policy_never_stops() -> None:
    spec = spec_for("Random")
    trials = [finished(0, 1.0), finished(1, 1.0), running(2, ((20, 99.0),))]
    assert stop_reason(spec, trials, 2) is None


# -- the result -----------------------------------------------------------------------------


def test_best_and_range_warnings() -> None:
    spec = spec_for("Random")
    trials = [
        Observation(0, {"x": 3.99, "y": 2.0}, TrialState.SUCCEEDED, 1.0),
        Observation(1, {"x": 0.05, "y": 2.0}, TrialState.SUCCEEDED, 2.0),
        Observation(2, {"x": 1.0, "y": 1.0}, TrialState.FAILED),
        Observation(3, {"x": 2.0, "y": 2.0}, TrialState.EARLY_STOPPED, None, ((20, 0.1),)),
    ]
    top = best(spec, trials)
    assert top is not None
    assert top.number == 0
    assert range_warnings(spec, top.params) == ["widen x above 4"]
    # x sets training.weightDecay, which cannot go below 0: nothing to widen there.
    assert range_warnings(spec, trials[1].params) == []
    assert range_warnings(spec, {"x": 2.0, "y": 2.0}) == []
    assert best(spec, trials[2:]) is None
    # Above a field's own maximum (weightDecay <= 10) there is nothing to widen either;
    # below a range's minimum that is not the field's, there is.
    wide = spec_for(
        "Random",
        [
            {"name": "x", "path": "training.weightDecay", "type": "Float", "min": 0.5, "max": 10},
            {"name": "y", "path": "training.gradClip", "type": "Float", "min": 0, "max": 4},
        ],
    )
    assert range_warnings(wide, {"x": 0.5, "y": 2.0}) == ["widen x below 0.5"]
    assert range_warnings(wide, {"x": 10.0, "y": 2.0}) == []


# -- sharing workers -----------------------------------------------------------------------


def test_leaders_get_the_spare_workers_and_stopped_trials_free_theirs() -> None:
    trials = [
        RunningTrial("s-t0", 0, 1, 3, 2, 3.0),
        RunningTrial("s-t1", 1, 1, 3, 1, 2.0),
        RunningTrial("s-t2", 2, 1, 3, 1, None),
    ]
    plan = {a.name: a for a in allocate(6, trials)}
    assert {n: a.replicas for n, a in plan.items()} == {"s-t0": 2, "s-t1": 3, "s-t2": 1}
    assert plan["s-t1"].reason.startswith("Leading: rank 1 of 3 (objective 2)")
    assert plan["s-t0"].reason == ""  # unchanged
    # s-t1 stopped early: it is no longer running, and s-t0 takes its workers.
    plan = {a.name: a for a in allocate(6, [trials[0], trials[2]])}
    assert {n: a.replicas for n, a in plan.items()} == {"s-t0": 3, "s-t2": 3}
    maximize = {a.name: a.replicas for a in allocate(4, trials[:2], maximize=True)}
    assert maximize == {"s-t0": 3, "s-t1": 1}


def test_warm_spares_use_the_shared_budget_like_workers() -> None:
    trials = [RunningTrial("s-t0", 0, 1, 3, 1, 3.0), RunningTrial("s-t1", 1, 1, 3, 1, 2.0)]
    # 6 shared, one spare per trial: 4 for workers, the leader's extra is 2, not 3.
    plan = {a.name: a for a in allocate(6, trials, spares_per_trial=1)}
    assert {n: a.replicas for n, a in plan.items()} == {"s-t0": 1, "s-t1": 3}
    assert "(1 warm spare(s) per trial included)" in plan["s-t1"].reason
    # Only the minimums and the spares fit: nobody grows.
    tight = {a.name: a.replicas for a in allocate(4, trials, spares_per_trial=1)}
    assert tight == {"s-t0": 1, "s-t1": 1}


def test_trials_of_parameters_since_changed_keep_their_numbers_and_guide_nothing() -> None:
    spec = spec_for("Bayesian", seed=2)
    done = run_search(spec, shifted_quadratic, 5)
    # Trial 1 ran with parameters the spec no longer has (read back as no parameters).
    changed = [*done[:1], Observation(1, {}, TrialState.SUCCEEDED, 0.5), *done[2:]]
    params = suggest(spec, changed)
    assert set(params) == {"x", "y"}
    assert suggest(spec, changed) == params
