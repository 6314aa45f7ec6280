"""The KPA port against cases from knative/serving's pkg/autoscaler/scaling/autoscaler_test.go.

Each test names the upstream test it ports. Upstream's test decider (newTestAutoscaler):
panic threshold 2, scale-up and scale-down rates 10, a 60 s stable window, reachable,
and one ready pod unless a case sets another count.
"""

from __future__ import annotations

from typing import Any

import pytest

from lmoperator.autoscale.kpa import DeciderSpec, KnativeAutoscaler, WindowAverage

T0 = 1_000_000.0


def new(target: float, ready: int = 1, **overrides: Any) -> KnativeAutoscaler:
    spec = DeciderSpec(
        target_value=target, max_scale_up_rate=10, max_scale_down_rate=10, stable_window=60
    )
    for k, v in overrides.items():
        setattr(spec, k, v)
    return KnativeAutoscaler.create(spec, ready, T0)


def test_autoscaler_no_data_no_autoscale() -> None:
    """TestAutoscalerNoDataNoAutoscale: no metrics gives an invalid result, not zero."""
    assert new(10).scale(T0, 1, None, None) is None


def test_autoscaler_stable_mode_increase_with_concurrency_default() -> None:
    """TestAutoscalerStableModeIncreaseWithConcurrencyDefault"""
    a = new(10)
    assert a.scale(T0, 1, 50, 10) == 5
    assert a.scale(T0, 1, 100, 10) == 10


def test_autoscaler_stable_mode_decrease() -> None:
    """TestAutoscalerStableModeDecrease"""
    a = new(10, ready=8)
    a.panic_time, a.max_panic_pods = None, 0  # upstream's case starts from a fresh decider
    assert a.scale(T0, 8, 100, 100) == 10
    assert a.scale(T0, 8, 50, 50) == 5


def test_autoscaler_panic_then_unpanic_scale_down() -> None:
    """TestAutoscalerPanicThenUnPanicScaleDown: no scale-down until the stable window
    has passed since the last over-threshold tick."""
    a = new(10)
    assert a.scale(T0, 1, 100, 100) == 10
    panic_time = T0 + 1
    assert a.scale(panic_time, 10, 100, 1000) == 100
    assert a.scale(panic_time + 30, 10, 1, 1) == 100
    assert a.scale(panic_time + 61, 10, 1, 1) == 1


def test_autoscaler_rate_limit_scale_up() -> None:
    """TestAutoscalerRateLimitScaleUp"""
    a = new(10)
    assert a.scale(T0, 1, 1000, 1001) == 10
    assert a.scale(T0, 10, 1000, 1001) == 100


def test_autoscaler_rate_limit_scale_down() -> None:
    """TestAutoscalerRateLimitScaleDown"""
    a = new(10)
    assert a.scale(T0, 100, 1, 1) == 10
    assert a.scale(T0, 10, 1, 1) == 1


def test_autoscaler_use_one_pod_as_minimum_if_endpoints_not_found() -> None:
    """TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound"""
    assert new(10).scale(T0, 0, 1000, 888) == 10


def test_autoscaler_unpanic_after_slow_increase() -> None:
    """TestAutoscalerUnpanicAfterSlowIncrease"""
    a = new(1, ready=10)
    a.panic_time, a.max_panic_pods = None, 0  # upstream creates it at one ready pod
    assert a.scale(T0, 10, 11, 25) == 25
    assert a.panic_time == T0
    t = T0 + 30
    assert a.scale(t, 40, 30, 41) == 41
    assert a.panic_time == T0
    t += 30 + 2  # half the stable window and one tick
    assert a.scale(t, 55, 50, 56) == 50
    assert a.panic_time is None


def test_autoscaler_extend_panic_window() -> None:
    """TestAutoscalerExtendPanicWindow"""
    a = new(1, ready=10)
    a.panic_time, a.max_panic_pods = None, 0
    assert a.scale(T0, 10, 11, 25) == 25
    assert a.scale(T0 + 30, 40, 30, 80) == 80
    assert a.panic_time == T0 + 30


def test_autoscaler_panic_mode_exponential_track_and_stabilize() -> None:
    """TestAutoscalerPanicModeExponentialTrackAndStabilize"""
    a = new(1)
    assert a.scale(T0, 1, 6, 6) == 6
    assert a.scale(T0, 6, 36, 36) == 36
    assert a.scale(T0 + 1, 36, 216, 216) == 216
    assert a.scale(T0 + 1, 216, 1296, 1296) == 1296
    assert a.scale(T0 + 2, 1296, 1296, 1296) == 1296


SCALE_TABLE: list[tuple[Any, ...]] = [
    # (upstream label, target, stable, panic, ready, prep, want)
    ("AutoscalerStableModeNoChange", 10, 50, 50, 1, {}, 5),
    ("AutoscalerStableModeNoChangeAlreadyScaled", 10, 50, 50, 5, {}, 5),
    ("AutoscalerPanicStableLargerThanPanic", 1, 50, 30, 5, {"panic": 5}, 50),
    ("AutoscalerPanicStableLessThanPanic", 1, 20, 30, 5, {"panic": 5}, 30),
    ("AutoscalerStableModeIncreaseWithSmallScaleUpRate", 1, 3, 3.1, 2,
     {"max_scale_up_rate": 1.1}, 3),
    ("AutoscalerStableModeDecreaseWithSmallScaleDownRate", 10, 1, 1, 100,
     {"max_scale_down_rate": 1.1}, 90),
    ("AutoscalerStableModeDecreaseNonReachable", 10, 1, 1, 100,
     {"max_scale_down_rate": 1.1, "reachable": False}, 1),
    ("AutoscalerPanicModeDoublePodCount", 10, 50, 100, 1, {}, 10),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "target", "stable", "panic", "ready", "prep", "want"),
    SCALE_TABLE,
    ids=[c[0] for c in SCALE_TABLE],
)
def test_autoscaler_scale(
    label: str,
    target: float,
    stable: float,
    panic: float,
    ready: int,
    prep: dict[str, Any],
    want: int,
) -> None:
    """TestAutoscalerScale (table)."""
    prep = dict(prep)
    max_panic = prep.pop("panic", None)
    a = new(target, **prep)
    if max_panic is not None:
        a.panic_time, a.max_panic_pods = T0 - 5, max_panic
    assert a.scale(T0, ready, stable, panic) == want


def test_autoscaler_scale_down_delay() -> None:
    """TestAutoscalerScaleDownDelay ("simple" and "gradual")."""
    a = new(10, ready=0, scale_down_delay=300, panic_threshold=100)
    assert a.scale(T0 + 2, 0, 40, 40) == 4
    assert a.scale(T0 + 300, 0, 0, 0) == 4
    assert a.scale(T0 + 302, 0, 0, 0) == 0
    assert a.scale(T0 + 540, 0, 40, 40) == 4
    assert a.scale(T0 + 600, 0, 30, 30) == 4
    assert a.scale(T0 + 660, 0, 0, 0) == 4
    assert a.scale(T0 + 840, 0, 0, 0) == 3
    assert a.scale(T0 + 900, 0, 0, 0) == 0


def test_start_in_panic_mode() -> None:
    """TestStartInPanicMode: a decider created over more than one pod starts panicking."""
    spec = DeciderSpec(target_value=100, panic_threshold=220, max_scale_up_rate=10)
    for ready in (0, 1):
        a = KnativeAutoscaler.create(spec, ready, T0)
        assert not a.panicking
        assert a.max_panic_pods == ready
    a = KnativeAutoscaler.create(spec, 2, T0)
    assert a.panicking
    assert a.max_panic_pods == 2


def test_window_average_is_the_mean_of_per_second_buckets() -> None:
    w = WindowAverage()
    for s in range(60):
        w.record(T0 + s, 10.0 if s >= 54 else 1.0)
    assert w.average(T0 + 59, 6) == 10.0
    assert w.average(T0 + 59, 60) == pytest.approx((54 * 1 + 6 * 10) / 60)
    assert WindowAverage().average(T0, 6) is None
