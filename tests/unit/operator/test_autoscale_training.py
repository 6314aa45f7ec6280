"""The LMTrainingJob autoscaler on hand-computed scaling curves."""

from __future__ import annotations

import pytest

from lmoperator.api.trainingjob import AutoscalingPolicy, TrainingAutoscaling
from lmoperator.autoscale.training import (
    ScalingCurve,
    ThroughputObservation,
    TrainingReason,
    best_size,
    decide_training,
    fit_curve,
)

# t1 = 100 tokens/s, alpha = 0.1: T(1) = 100, T(2) = 200/1.1, T(3) = 300/1.2 = 250,
# T(4) = 400/1.3.
CURVE = [
    ThroughputObservation(1, 100.0),
    ThroughputObservation(2, 200 / 1.1),
    ThroughputObservation(4, 400 / 1.3),
]


def spec(
    policy: AutoscalingPolicy = AutoscalingPolicy.THROUGHPUT, **kw: float
) -> TrainingAutoscaling:
    return TrainingAutoscaling.model_validate(
        {"policy": policy.value, "minEfficiency": 0.7, "cooldownSeconds": 120, **kw}
    )


def test_fit_recovers_t1_and_alpha() -> None:
    curve = fit_curve(CURVE)
    assert curve is not None
    assert curve.t1 == pytest.approx(100.0)
    assert curve.alpha == pytest.approx(0.1)


def test_fit_averages_repeated_sizes_and_needs_two_sizes() -> None:
    assert fit_curve([ThroughputObservation(2, 150.0)]) is None
    curve = fit_curve([ThroughputObservation(1, 90.0), ThroughputObservation(1, 110.0), *CURVE[1:]])
    assert curve is not None
    assert curve.t1 == pytest.approx(100.0)


def test_marginal_efficiency_by_hand() -> None:
    curve = ScalingCurve(t1=100.0, alpha=0.1)
    # (T(2) - T(1)) / t1 = (181.82 - 100) / 100; (T(3) - T(2)) / t1 = (250 - 181.82) / 100
    assert curve.marginal_efficiency(1) == pytest.approx(0.8182, abs=1e-4)
    assert curve.marginal_efficiency(2) == pytest.approx(0.6818, abs=1e-4)
    assert best_size(curve, 1, 8, 0.7) == 2
    assert best_size(curve, 1, 8, 0.6) == 3  # (T(4) - T(3)) / t1 = 0.577 < 0.6
    assert best_size(ScalingCurve(100.0, 0.0), 1, 8, 0.99) == 8  # linear: up to max


@pytest.mark.parametrize(
    ("current", "desired", "reason"),
    [
        (1, 2, TrainingReason.GROW_WHILE_EFFICIENT),
        (2, 2, TrainingReason.AT_BEST_SIZE),
        (4, 3, TrainingReason.SHRINK_BELOW_EFFICIENCY),
    ],
)
def test_throughput_steps_one_worker_towards_the_best_size(
    current: int, desired: int, reason: TrainingReason
) -> None:
    d = decide_training(
        1000.0, current, spec(), min_workers=1, max_workers=8, observations=CURVE,
        last_rescale_at=None, rescale_downtime_seconds=None,
    )  # fmt: skip
    assert (d.desired, d.reason) == (desired, reason)
    assert d.figures["bestSize"] == 2


def test_cooldown_holds_after_a_rescale() -> None:
    d = decide_training(
        1000.0, 1, spec(), min_workers=1, max_workers=8, observations=CURVE,
        last_rescale_at=950.0, rescale_downtime_seconds=None,
    )  # fmt: skip
    assert (d.desired, d.reason) == (1, TrainingReason.COOLDOWN)
    later = decide_training(
        1071.0, 1, spec(), min_workers=1, max_workers=8, observations=CURVE,
        last_rescale_at=950.0, rescale_downtime_seconds=None,
    )  # fmt: skip
    assert later.desired == 2


def test_one_measured_size_explores_one_step_up() -> None:
    d = decide_training(
        0.0, 2, spec(), min_workers=1, max_workers=4,
        observations=[ThroughputObservation(2, 150.0)],
        last_rescale_at=None, rescale_downtime_seconds=None,
    )  # fmt: skip
    assert (d.desired, d.reason) == (3, TrainingReason.EXPLORING)


def test_goodput_nets_out_measured_rescale_downtime() -> None:
    # Over a 120 s cooldown: staying trains 100 x 120 = 12000 tokens; growing to 2 trains
    # 181.8 x (120 - D). D = 60 s: 10909 < 12000, hold; D = 10 s: 20000 > 12000, grow.
    slow = decide_training(
        0.0, 1, spec(AutoscalingPolicy.GOODPUT), min_workers=1, max_workers=8,
        observations=CURVE, last_rescale_at=None, rescale_downtime_seconds=60.0,
    )  # fmt: skip
    assert (slow.desired, slow.reason) == (1, TrainingReason.RESCALE_NOT_WORTH_IT)
    assert slow.figures["tokensIfRescale"] == pytest.approx(200 / 1.1 * 60, abs=0.1)
    fast = decide_training(
        0.0, 1, spec(AutoscalingPolicy.GOODPUT), min_workers=1, max_workers=8,
        observations=CURVE, last_rescale_at=None, rescale_downtime_seconds=10.0,
    )  # fmt: skip
    assert (fast.desired, fast.reason) == (2, TrainingReason.GROW_WHILE_EFFICIENT)


def test_policy_none_and_bounds() -> None:
    none = decide_training(
        0.0, 3, spec(AutoscalingPolicy.NONE), min_workers=1, max_workers=8,
        observations=CURVE, last_rescale_at=None, rescale_downtime_seconds=None,
    )  # fmt: skip
    assert (none.desired, none.reason) == (3, TrainingReason.DISABLED)
    above = decide_training(
        0.0, 9, spec(), min_workers=1, max_workers=8, observations=CURVE,
        last_rescale_at=None, rescale_downtime_seconds=None,
    )  # fmt: skip
    assert (above.desired, above.reason) == (8, TrainingReason.ABOVE_MAXIMUM)
