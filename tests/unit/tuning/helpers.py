"""Searches run in-process on known functions, through the same rebuild-from-status path
the operator takes on every pass."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lmoperator.api import LMTuningJob, parse_resource
from lmoperator.api.tuningjob import LMTuningJobSpec, TrialState
from lmoperator.tuning.search import Observation, suggest

EXAMPLE = Path(__file__).resolve().parents[3] / "manifests" / "examples" / "tuning-job.yaml"

Objective = Callable[[dict[str, Any]], float]


def spec_for(
    algorithm: str,
    parameters: list[dict[str, Any]] | None = None,
    seed: int = 0,
    max_trials: int = 60,
    parallel: int = 1,
    **algorithm_settings: Any,
) -> LMTuningJobSpec:
    """The example's spec searching x, y in [0, 4] (or `parameters`) with `algorithm`."""
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    doc["spec"]["parameters"] = parameters or [
        {"name": "x", "path": "training.weightDecay", "type": "Float", "min": 0, "max": 4},
        {"name": "y", "path": "training.gradClip", "type": "Float", "min": 0, "max": 4},
    ]
    doc["spec"]["algorithm"] = {"name": algorithm, "seed": seed, **algorithm_settings}
    doc["spec"]["budget"] = {"maxTrials": max_trials, "parallelTrials": parallel}
    doc["spec"]["earlyStopping"] = {"policy": "None"}
    job = parse_resource(doc)
    assert isinstance(job, LMTuningJob)
    return job.spec


def shifted_quadratic(p: dict[str, Any]) -> float:
    return float((p["x"] - 1.3) ** 2 + (p["y"] - 2.2) ** 2)


def rosenbrock(p: dict[str, Any]) -> float:
    """Rosenbrock's valley moved into [0, 4]^2: minimum 0 at (3, 3)."""
    x, y = p["x"] - 2.0, p["y"] - 2.0
    return float((1 - x) ** 2 + 100 * (y - x * x) ** 2)


def run_search(spec: LMTuningJobSpec, objective: Objective, trials: int) -> list[Observation]:
    """`trials` trials, parallelTrials at a time: each proposed from a study rebuilt from
    the records (the ones of its round still running), then all of the round evaluated."""
    done: list[Observation] = []
    parallel = spec.budget.parallel_trials
    while len(done) < trials:
        batch: list[Observation] = []
        for number in range(len(done), min(trials, len(done) + parallel)):
            params = suggest(spec, [*done, *batch])
            batch.append(Observation(number, params, TrialState.RUNNING))
        done.extend(
            Observation(t.number, t.params, TrialState.SUCCEEDED, objective(t.params))
            for t in batch
        )
    return done


def best_value(trials: list[Observation], first: int | None = None) -> float:
    values = [t.value for t in trials[:first] if t.value is not None]
    return min(values)
