"""The autoscaler simulator's service model (bench/autoscale_sim.py), so that its figures
in docs/benchmarks.md rest on a model that is checked."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "autoscale_sim.py"


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("autoscale_sim", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["autoscale_sim"] = module
    spec.loader.exec_module(module)
    return module


def args(**kw: float) -> argparse.Namespace:
    base = {"target": 8.0, "slo_seconds": 3.0, "start_seconds": 40.0, "warmup_seconds": 20.0}
    base.update(kw)
    return argparse.Namespace(seed=1, plots=None, quick=True, **base)


def test_pod_throughput_follows_the_serving_benchmark(sim: ModuleType) -> None:
    # SmolLM2 bf16 over HTTP: 14.4, 69.4 and 118.9 tokens/s at 1, 8 and 32 clients,
    # 16 tokens a request.
    assert sim.rate_at(1) == pytest.approx(14.4 / 16)
    assert sim.rate_at(8) == pytest.approx(69.4 / 16)
    assert sim.rate_at(32) == sim.rate_at(100) == pytest.approx(118.9 / 16)
    assert sim.rate_at(20) == pytest.approx((69.4 + 118.9) / 2 / 16)
    # Latency c / X(c) within 3 s up to about 16 requests in flight: 5.4 requests/s.
    assert sim.slo_capacity(3.0) == pytest.approx(5.39, abs=0.01)


def test_flaps_are_reversals_within_five_minutes(sim: ModuleType) -> None:
    result = sim.Result(changes=[(0.0, 1), (100.0, -1), (500.0, 1), (1000.0, -1), (1010.0, 1)])
    # Reversals 100 s and 10 s after the previous change are flaps; 400 s and 500 s are not.
    assert result.flaps() == 2


def test_a_fixed_fleet_meets_the_slo_below_capacity_and_misses_above(sim: ModuleType) -> None:
    a = args()
    for rate, pods, expect_hits in ((8.0, 4, True), (40.0, 2, False)):
        service = sim.Service(a, least_loaded_first=False)
        service.scale_to(-1000.0, pods)
        result = sim.Result()
        for p in service.pods:
            p.ready_at = -1000.0
        for i in range(600):
            service.step(float(i), 1.0, rate, result, True)
        attainment = result.hits / result.requests
        assert (attainment > 0.99) is expect_hits
        assert result.requests == pytest.approx(rate * 600)


def test_the_simulator_prints_one_json_line(
    sim: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.main(["--traces", "spike"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    figures = json.loads(out[0])
    spike = figures["traces"]["spike"]
    assert set(spike) >= {"hpa", "kpa", "ours", "targets", "held_out"}
    assert 0 < spike["ours"]["slo_attainment"] <= 1
