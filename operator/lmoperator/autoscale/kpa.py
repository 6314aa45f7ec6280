"""Knative's KPA (Knative Pod Autoscaler), ported faithfully as a baseline.

Source: knative/serving `pkg/autoscaler/scaling/autoscaler.go` (`newAutoscaler`,
`Scale`) with the defaults of `config-autoscaler`: a 60 s stable window, a panic window
of 10 % of it (6 s), panic at 200 % of the ready pods' capacity, no scale-down while
panicking, a scale-up rate of 1000 and a scale-down rate of 2, and a target utilization
(`container-concurrency-target-percentage`, 70 %) that the caller folds into
`target_value`. `WindowAverage` stands in for the metric collector's bucketed averages
(the default "linear" algorithm: the plain mean of the per-second buckets in a window).
`tests/unit/test_autoscale_kpa.py` ports cases from `autoscaler_test.go`.

Left out: the excess-burst-capacity figure (it steers the activator, not the replica
count), activation scale > 1 and scale to zero (LMService keeps at least one replica:
the caller clamps to its minimum).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

DEFAULT_STABLE_WINDOW_SECONDS = 60.0
DEFAULT_PANIC_WINDOW_PERCENTAGE = 10.0
DEFAULT_PANIC_THRESHOLD = 2.0
DEFAULT_MAX_SCALE_UP_RATE = 1000.0
DEFAULT_MAX_SCALE_DOWN_RATE = 2.0
DEFAULT_TARGET_UTILIZATION = 0.7
DEFAULT_TICK_SECONDS = 2.0


@dataclass
class DeciderSpec:
    target_value: float
    max_scale_up_rate: float = DEFAULT_MAX_SCALE_UP_RATE
    max_scale_down_rate: float = DEFAULT_MAX_SCALE_DOWN_RATE
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD
    stable_window: float = DEFAULT_STABLE_WINDOW_SECONDS
    scale_down_delay: float = 0.0
    reachable: bool = True


@dataclass
class _MaxTimeWindow:
    """The scale-down delay window: the largest value recorded within `window` seconds."""

    window: float
    entries: deque[tuple[float, int]] = field(default_factory=deque)

    def record(self, now: float, value: int) -> None:
        while self.entries and self.entries[0][0] <= now - self.window:
            self.entries.popleft()
        # Values no larger than the new one can never be the maximum again.
        while self.entries and self.entries[-1][1] <= value:
            self.entries.pop()
        self.entries.append((now, value))

    def current(self) -> int:
        return self.entries[0][1] if self.entries else 0


@dataclass
class KnativeAutoscaler:
    """One revision's decider: `scale()` is called every tick with the window averages."""

    spec: DeciderSpec
    panic_time: float | None = None
    max_panic_pods: int = 0
    delay_window: _MaxTimeWindow | None = None

    @classmethod
    def create(cls, spec: DeciderSpec, ready_pods: int, now: float) -> KnativeAutoscaler:
        """`newAutoscaler`: start in panic mode above one pod, so that a restart without
        metric history does not scale a busy revision down."""
        delay = _MaxTimeWindow(spec.scale_down_delay) if spec.scale_down_delay > 0 else None
        if ready_pods > 1:
            return cls(spec, now, ready_pods, delay)
        return cls(spec, None, ready_pods, delay)

    def scale(
        self, now: float, ready_pods: int, stable_value: float | None, panic_value: float | None
    ) -> int | None:
        """`Scale`: the desired pod count, or None ("invalid") without metric data."""
        spec = self.spec
        if stable_value is None or panic_value is None:
            return None
        ready = max(1.0, float(ready_pods))
        max_scale_up = math.ceil(spec.max_scale_up_rate * ready)
        max_scale_down = math.floor(ready / spec.max_scale_down_rate) if spec.reachable else 0
        dspc = math.ceil(stable_value / spec.target_value)
        dppc = math.ceil(panic_value / spec.target_value)
        desired_stable = int(min(max(dspc, max_scale_down), max_scale_up))
        desired_panic = int(min(max(dppc, max_scale_down), max_scale_up))

        over_threshold = dppc / ready >= spec.panic_threshold
        if over_threshold:
            # Begin panicking, or extend the panic while still over the threshold.
            self.panic_time = now
        elif self.panic_time is not None and self.panic_time + spec.stable_window < now:
            self.panic_time = None
            self.max_panic_pods = 0

        desired = desired_stable
        if self.panic_time is not None:
            desired = max(desired, desired_panic)
            # No scale-down while panicking: only increases are applied.
            if desired > self.max_panic_pods:
                self.max_panic_pods = desired
            desired = self.max_panic_pods

        if self.delay_window is not None:
            self.delay_window.record(now, desired)
            desired = self.delay_window.current()
        return desired

    @property
    def panicking(self) -> bool:
        return self.panic_time is not None


@dataclass
class WindowAverage:
    """Per-second buckets of a fleet-wide metric, averaged over a window, as the
    KPA's metric collector does (the "linear" algorithm)."""

    buckets: deque[tuple[int, float]] = field(default_factory=deque)
    horizon: float = DEFAULT_STABLE_WINDOW_SECONDS

    def record(self, now: float, value: float) -> None:
        second = math.floor(now)
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1] = (second, value)
        else:
            self.buckets.append((second, value))
        while self.buckets and self.buckets[0][0] <= second - self.horizon:
            self.buckets.popleft()

    def average(self, now: float, window: float) -> float | None:
        """The mean of the buckets within `window` seconds of `now`, None when empty."""
        cutoff = math.floor(now) - window
        values = [v for t, v in self.buckets if t > cutoff]
        if not values:
            return None
        return sum(values) / len(values)
