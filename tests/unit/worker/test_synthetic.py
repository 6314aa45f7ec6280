"""The worker's synthetic scaling curve (a test and benchmark aid)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from lmworker.synthetic import SyntheticScaling, parse
from lmworker.train import ElasticWorker


def test_parse_and_curve() -> None:
    curve = parse("t1=400, alpha=0.25")
    assert curve == SyntheticScaling(400.0, 0.25)
    assert curve.throughput(1) == 400.0
    assert curve.throughput(3) == pytest.approx(3 * 400 / 1.5)
    # 800 tokens a step at 3 workers (800 tokens/s): one second.
    assert curve.step_seconds(800, 3) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("t1=400", "expected t1="),
        ("t1=400,alpha=0.2,beta=1", "got 'beta=1'"),
        ("t1=fast,alpha=0.2", "t1 must be a number"),
        ("t1=0,alpha=0.2", "t1 must be > 0"),
        ("t1=10,alpha=1.5", "alpha must be within 0..1"),
        ("t1=10,t1=20", "got 't1=20'"),
    ],
)
def test_bad_values_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match="ELASTICLM_SYNTHETIC_SCALING") as info:
        parse(text)
    assert words in str(info.value)


def pacer(curve: SyntheticScaling | None, tokens: int) -> Any:
    worker: Any = ElasticWorker.__new__(ElasticWorker)
    worker.synthetic = curve
    worker._slower_than_curve = False
    worker.trainer = SimpleNamespace(tokens_per_step=lambda: tokens)
    return worker


def test_pace_pads_a_fast_step_to_the_curve() -> None:
    worker = pacer(SyntheticScaling(t1=1000.0, alpha=0.5), tokens=100)
    started = time.monotonic()
    # At 2 workers: 2 * 1000 / 1.5 tokens/s, so 100 tokens take 0.075 s.
    assert worker._pace(0.01, 2) == pytest.approx(0.075)
    assert time.monotonic() - started >= 0.06
    # A step slower than the curve is reported as measured.
    assert worker._pace(0.5, 2) == 0.5
    assert worker._slower_than_curve
    assert pacer(None, 100)._pace(0.01, 2) == 0.01
