"""Load forecasting for the predictive term: additive Holt-Winters (level, trend and a
daily season) over fixed-size buckets of a fleet-wide demand metric.

Pure Python and incremental (one O(1) update per bucket), so the operator's base image
needs no numerical stack and a decision costs microseconds. Buckets are indexed by
absolute time (`floor(t / bucket_seconds)`), so the season lines up with the time of
day whatever the history's start, and a history restored from the ConfigMap continues
where it stopped. A gap (no samples in a bucket) is filled with the model's own
one-step forecast, so missing data neither reads as zero load nor bends the trend.

Seasonality needs two full periods of history; before that `ready` is False and
`forecast` returns None: the autoscaler says so and stays reactive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DAY_SECONDS = 86_400


@dataclass
class HoltWinters:
    """Additive Holt-Winters with fixed smoothing constants.

    The constants favour a stable season (gamma small: a day's pattern changes slowly)
    and a damped reaction of the trend (beta small: one noisy minute must not tilt the
    forecast). They were chosen once, on the simulator's diurnal training trace.
    """

    season_length: int
    alpha: float = 0.3
    beta: float = 0.02
    gamma: float = 0.1
    warmup: list[tuple[int, float]] = field(default_factory=list)
    level: float = 0.0
    trend: float = 0.0
    seasonal: list[float] = field(default_factory=list)
    last_index: int | None = None

    def __post_init__(self) -> None:
        if self.season_length < 2:
            raise ValueError("season_length must be at least 2 buckets")

    @property
    def ready(self) -> bool:
        return bool(self.seasonal)

    @property
    def buckets_seen(self) -> int:
        if self.ready:
            return 2 * self.season_length
        return len(self.warmup)

    def add(self, index: int, value: float) -> None:
        """Add the bucket with absolute index `index` (later than the last one added)."""
        if self.last_index is not None and index <= self.last_index:
            return
        if not self.ready:
            self._append_warmup(index, value)
            if len(self.warmup) >= 2 * self.season_length:
                self._initialise()
            return
        assert self.last_index is not None
        for gap in range(self.last_index + 1, index):
            self._update(gap, self._one_step(gap))
        self._update(index, value)

    def _append_warmup(self, index: int, value: float) -> None:
        if self.warmup:
            last_index, last_value = self.warmup[-1]
            # Fill gaps by carrying the last value: there is no model yet.
            for gap in range(last_index + 1, index):
                self.warmup.append((gap, last_value))
        self.warmup.append((index, value))
        self.last_index = index

    def _initialise(self) -> None:
        m = self.season_length
        values = [v for _, v in self.warmup[: 2 * m]]
        first_index = self.warmup[0][0]
        mean1 = sum(values[:m]) / m
        mean2 = sum(values[m : 2 * m]) / m
        trend = (mean2 - mean1) / m
        # Each period's mean sits at its middle; detrend before reading the season.
        middle = (m - 1) / 2
        self.seasonal = [0.0] * m
        for i in range(m):
            position = (first_index + i) % m
            first = values[i] - (mean1 + trend * (i - middle))
            second = values[m + i] - (mean2 + trend * (i - middle))
            self.seasonal[position] = (first + second) / 2
        # The level one bucket before the first one.
        self.level = mean1 - trend * (middle + 1)
        self.trend = trend
        # Run the smoother through the history once, from the start of the first period.
        self.last_index = first_index - 1
        rest = self.warmup[2 * m :]
        self.warmup = []
        for index, value in ((first_index + i, v) for i, v in enumerate(values)):
            self._update(index, value)
        for index, value in rest:
            self._update(index, value)

    def _one_step(self, index: int) -> float:
        return self.level + self.trend + self.seasonal[index % self.season_length]

    def _update(self, index: int, value: float) -> None:
        m = self.season_length
        season = self.seasonal[index % m]
        previous_level = self.level
        self.level = self.alpha * (value - season) + (1 - self.alpha) * (self.level + self.trend)
        self.trend = self.beta * (self.level - previous_level) + (1 - self.beta) * self.trend
        self.seasonal[index % m] = self.gamma * (value - self.level) + (1 - self.gamma) * season
        self.last_index = index

    def forecast(self, index: int) -> float | None:
        """The forecast for bucket `index` (after the last one added), None before the
        model has two periods of history."""
        if not self.ready or self.last_index is None:
            return None
        steps = max(1, index - self.last_index)
        value = self.level + steps * self.trend + self.seasonal[index % self.season_length]
        return max(0.0, value)


def fit(buckets: Iterable[tuple[int, float]], season_length: int) -> HoltWinters:
    """A model fed with (bucket index, value) pairs in time order."""
    model = HoltWinters(season_length)
    for index, value in buckets:
        model.add(index, value)
    return model
