"""`kubectl lm get lmtune` and `kubectl lm describe lmtune/NAME`: the trial table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lmoperator.api import kinds
from lmoperator.plugin.describe import describe
from lmoperator.plugin.resources import find_kind
from lmoperator.plugin.tables import get_table

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
SEARCH: dict[str, Any] = {
    "apiVersion": "elasticlm.io/v1alpha1",
    "kind": "LMTuningJob",
    "metadata": {"name": "lr", "namespace": "ml", "creationTimestamp": "2026-12-04T11:00:00Z"},
    "spec": {"algorithm": {"name": "Bayesian", "seed": 7}, "budget": {"maxTrials": 4}},
    "status": {
        "phase": "Running",
        "trials": [
            {
                "name": "lr-t0",
                "number": 0,
                "state": "Succeeded",
                "objective": 2.31,
                "parameters": {"learningRate": "0.003"},
                "replicas": 0,
            },
            {
                "name": "lr-t1",
                "number": 1,
                "state": "EarlyStopped",
                "objective": 3.4,
                "parameters": {"learningRate": "0.0001"},
                "replicas": 0,
                "reason": "Median: 3.4 at step 20 is worse than the median 2.6",
            },
            {
                "name": "lr-t2",
                "number": 2,
                "state": "Running",
                "objective": 2.5,
                "parameters": {"learningRate": "0.001"},
                "replicas": 2,
            },
        ],
        "bestTrial": {"name": "lr-t0", "objective": 2.31, "parameters": {"learningRate": "0.003"}},
        "rangeWarnings": ["widen learningRate above 0.003"],
        "reallocations": [
            {
                "time": "2026-12-04T11:59:00Z",
                "trial": "lr-t2",
                "from": 1,
                "to": 2,
                "reason": "Leading: rank 1 of 1 (objective 2.5)",
            }
        ],
    },
}


def test_lmtune_names_the_kind() -> None:
    assert find_kind("lmtune") == kinds.TUNING_JOB
    assert find_kind("lmtuningjobs") == kinds.TUNING_JOB


def test_get_shows_algorithm_trials_and_best() -> None:
    header, row = get_table(kinds.TUNING_JOB, [SEARCH], NOW)
    assert header.split() == ["NAME", "PHASE", "ALGORITHM", "TRIALS", "BEST", "OBJECTIVE", "AGE"]
    assert row.split()[:6] == ["lr", "Running", "Bayesian", "3/4", "lr-t0", "2.310"]


def test_describe_prints_the_trial_table() -> None:
    page = "\n".join(describe(kinds.TUNING_JOB, SEARCH, [], NOW))
    assert "Best:" in page
    assert "lr-t0 (2.310) learningRate=0.003" in page
    assert "widen learningRate above 0.003" in page
    assert "Trials:" in page
    lines = page.splitlines()
    start = lines.index("Trials:")
    assert lines[start + 1].split() == [
        "TRIAL",
        "STATE",
        "WORKERS",
        "OBJECTIVE",
        "PARAMETERS",
        "REASON",
    ]
    assert lines[start + 3].split()[:5] == [
        "lr-t1",
        "EarlyStopped",
        "0",
        "3.400",
        "learningRate=0.0001",
    ]
    assert "Median: 3.4 at step 20" in lines[start + 3]
    assert "Reallocations:" in page
