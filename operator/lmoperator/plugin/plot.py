"""`plot`: an autoscaled LMService's replicas against its load over time, as a PNG.

Drawn from the history the operator keeps in the service's ConfigMap
(`autoscale/history.py`): the replica count as a step line on top, and one panel per
signal in the history below it (the fleet's total for demand signals, the average for
quality signals), sharing the time axis; minutes without a value are gaps, not zeros.
matplotlib is an optional extra (`pip install 'elasticlm[plot]'`), imported only here
and only when a plot is drawn.
"""

from __future__ import annotations

import importlib.util
import math
from datetime import UTC, datetime
from pathlib import Path

from lmoperator.autoscale.history import BUCKET_SECONDS, MetricHistory

UNITS = {
    "InFlightRequests": "requests in flight",
    "QueueDepth": "requests waiting",
    "RequestsPerSecond": "requests/s",
    "TokensPerSecond": "tokens/s",
    "LatencyP95": "p95 time to first token (s)",
    "KVCacheUsage": "KV-cache slots in use (share)",
}


class PlotUnavailableError(Exception):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailableError(
            "plot needs matplotlib, which is not installed; install it with: "
            "pip install 'elasticlm[plot]'"
        )


def _with_gaps(
    points: list[tuple[float, float]],
) -> tuple[list[datetime], list[float]]:
    """The points with a NaN after each missing minute, so the line breaks there."""
    times: list[datetime] = []
    values: list[float] = []
    previous: float | None = None
    for start, value in points:
        if previous is not None and start - previous > BUCKET_SECONDS:
            times.append(datetime.fromtimestamp(previous + BUCKET_SECONDS, UTC))
            values.append(math.nan)
        times.append(datetime.fromtimestamp(start, UTC))
        values.append(value)
        previous = start
    return times, values


def draw(history: MetricHistory, title: str, path: Path) -> dict[str, list[float]]:
    """Write the PNG; return each plotted series' values by its label (what the figure
    shows, read back from its lines), for the caller to report and tests to check.

    Raises PlotUnavailableError without matplotlib, ValueError on an empty history."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    replicas = history.replicas()
    if not replicas:
        raise ValueError("the history has no minute yet")
    signals = history.signals()
    fig, axes = plt.subplots(
        1 + len(signals),
        1,
        sharex=True,
        figsize=(10, 2.2 * (1 + len(signals)) + 0.6),
        squeeze=False,
    )
    try:
        top = axes[0][0]
        times, counts = _with_gaps([(t, float(r)) for t, r in replicas])
        top.step(times, counts, where="post", color="tab:blue", label="replicas")
        top.set_ylabel("replicas")
        top.set_ylim(bottom=0)
        top.set_title(title)
        top.legend(loc="upper left")
        for row, signal in enumerate(signals, 1):
            ax = axes[row][0]
            times, values = _with_gaps(history.series(signal))
            ax.plot(times, values, color="tab:orange", label=signal)
            ax.set_ylabel(UNITS.get(signal, signal))
            ax.set_ylim(bottom=0)
            ax.legend(loc="upper left")
        bottom = axes[-1][0]
        formatter = mdates.DateFormatter("%m-%d %H:%M", tz=UTC)  # type: ignore[no-untyped-call]
        bottom.xaxis.set_major_formatter(formatter)
        bottom.set_xlabel("time (UTC)")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
        return {
            str(line.get_label()): [float(v) for v in line.get_ydata()]
            for row in axes
            for line in row[0].get_lines()
        }
    finally:
        plt.close(fig)
