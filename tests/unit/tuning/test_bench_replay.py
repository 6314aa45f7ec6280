"""The wall-clock replay of bench/tuning.py part 2, so that its worker-seconds in
docs/benchmarks.md rest on an accounting that is checked: every worker the search holds
counts, from the search's start until the matching trial finishes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "tuning.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tuning", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tuning"] = module
    spec.loader.exec_module(module)
    return module


class Curves:
    """A stand-in objective: the n-th trial asked for gets the n-th final value, reached
    at the third of three checkpoints (steps 10, 20, 30), one in-process second a step."""

    def __init__(self, finals: list[float]) -> None:
        self.finals = finals
        self.asked = 0

    def __call__(self, params: dict[str, Any]) -> tuple[list[tuple[int, float]], float]:
        final = self.finals[self.asked]
        self.asked += 1
        return [(10, final + 2.0), (20, final + 1.0), (30, final)], 1.0


SHARED = {"parallel": 2, "workers": 4, "min": 1, "max": 3, "min_steps": 10}


def shared(steps: int = 30) -> dict[str, int]:
    return {**SHARED, "steps": steps, "interval": 10}


def test_fixed_workers_count_every_held_worker_including_starts(bench: ModuleType) -> None:
    spec = bench.spec_for("Bayesian", 0, 4, "None", shared())
    # 2 fixed workers a trial at 0.25 s a step: 7.5 s of steps after a 1 s start.
    clock = bench.Clock((0.5, 0.25, 0.2), 1.0, join=4.0, pause=0.5, start=1.0)
    # Katib's rule never judges here (it needs 100 succeeded trials).
    out = bench.replay(spec, Curves([3.0, 2.0, 2.5, 1.0]), 4, "katib", clock, (4, 100))
    timeline = out["timeline"]
    assert [round(at, 6) for at, _, _ in timeline] == [8.5, 8.5, 17.0, 17.0]
    # Two trials of 2 workers all along: 4 workers held the whole time.
    assert [round(spent, 6) for _, spent, _ in timeline] == [34.0, 34.0, 68.0, 68.0]
    assert bench.reached(timeline, 2.0) == pytest.approx((8.5, 34.0))
    assert bench.reached(timeline, 0.5) == (float("inf"), float("inf"))


def test_shared_budget_holds_all_workers_until_the_best(bench: ModuleType) -> None:
    spec = bench.spec_for("Bayesian", 0, 4, "Median", shared())
    clock = bench.Clock((0.3, 0.2, 0.15), 1.0, join=0.0, pause=0.0, start=0.0)
    out = bench.replay(spec, Curves([3.0, 2.0, 2.5, 1.0]), 4, "elastic", clock, (4, 3))
    at, spent = out["timeline"][0][:2]
    # The allocation hands out all 4 workers (3 to the leader, 1 to the other) while two
    # trials run: worker-seconds are 4 x the wall clock until the first one finishes.
    assert spent == pytest.approx(4 * at)
    # The leader (trial 0, 3 workers at 0.15 s a step) finishes first, at 4.5 s.
    assert at == pytest.approx(30 * 0.15)


def test_clock_scales_by_relative_cost_and_rejects_unknown_world_sizes(
    bench: ModuleType,
) -> None:
    clock = bench.Clock((0.2, 0.15), 0.5, join=0.0, pause=0.0, start=0.0)
    assert clock.step(1.0, 1) == pytest.approx(0.4)  # twice the reference point's cost
    assert clock.step(0.5, 2) == pytest.approx(0.15)
    with pytest.raises(ValueError, match=r"world sizes 1\.\.2"):
        clock.step(0.5, 3)
    alpha = bench.Clock((0.2,), 0.5, join=0.0, pause=0.0, start=0.0, alpha=0.5)
    assert alpha.step(0.5, 3) == pytest.approx(0.2 * 2 / 3)


def test_joining_and_paused_workers_are_held(bench: ModuleType) -> None:
    # Trial 1 overtakes trial 0 at its first checkpoint, so workers move to it: the
    # added ones are held while they join, and each change pauses a trial. All 4 count.
    spec = bench.spec_for("Bayesian", 0, 4, "None", shared())
    clock = bench.Clock((0.3, 0.2, 0.15), 1.0, join=2.0, pause=0.5, start=1.0)
    free = bench.Clock((0.3, 0.2, 0.15), 1.0, join=0.0, pause=0.0, start=1.0)
    finals = [3.0, 1.0, 2.5, 2.0]
    out = bench.replay(spec, Curves(finals), 4, "elastic", clock, (4, 3))
    at, spent = out["timeline"][0][:2]
    assert spent == pytest.approx(4 * at)
    # The rescales cost time: the first trial finishes later than with free rescales.
    bound = bench.replay(spec, Curves(finals), 4, "elastic", free, (4, 3))
    assert at > bound["timeline"][0][0]
