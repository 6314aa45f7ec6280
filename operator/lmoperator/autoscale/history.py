"""An autoscaled object's metric history: 1-minute buckets of its load and replica
count over the last 48 hours, kept in a ConfigMap the object owns.

What it promises:

- One bucket per minute: the mean of each signal's fleet value over the passes in that
  minute (the total over the reporting pods for a demand signal, their average for a
  quality signal) and the replica count the minute's last decision wanted. A pass
  without a value for a signal adds nothing to it: a gap stays a gap (`null` in the
  ConfigMap), never a zero.
- Bounded: at most MAX_BUCKETS (48 h) buckets, the oldest dropped first, values kept to
  4 significant digits, so the ConfigMap stays far below Kubernetes's 1 MiB limit
  (about 200 kB with every signal for 48 h; `encoded_size_bound` says how much).
- Only closed buckets are written; `MetricHistory.from_data` reads what `to_data`
  wrote (and says what is wrong with anything else), so an operator that restarts or
  fails over loads the history and the forecaster continues from it.
- Pure: `now` is an input; the handler reads and writes the ConfigMap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BUCKET_SECONDS = 60
MAX_BUCKETS = 48 * 60
DATA_KEY = "history.json"
FORMAT_VERSION = 1
HISTORY_SUFFIX = "-autoscaler-history"
# The label that marks the ConfigMap as the history of an object (its name is the value).
HISTORY_LABEL = "elasticlm.io/autoscaler-history-of"


def configmap_name(owner: str) -> str:
    return f"{owner}{HISTORY_SUFFIX}"


def _rounded(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return 0.0
    return float(f"{value:.4g}")


@dataclass
class Bucket:
    replicas: int
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def mean(self, signal: str) -> float | None:
        count = self.counts.get(signal, 0)
        return self.sums[signal] / count if count else None


@dataclass
class MetricHistory:
    """Buckets by their minute index (seconds since the epoch // 60)."""

    buckets: dict[int, Bucket] = field(default_factory=dict)

    def observe(self, now: float, replicas: int, values: Mapping[str, float]) -> None:
        """One pass: the replicas wanted and the fleet value of each signal read."""
        index = math.floor(now / BUCKET_SECONDS)
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket(replicas)
        bucket.replicas = replicas
        for signal, value in values.items():
            if math.isfinite(value):
                bucket.sums[signal] = bucket.sums.get(signal, 0.0) + value
                bucket.counts[signal] = bucket.counts.get(signal, 0) + 1
        self._prune(index)

    def _prune(self, newest: int) -> None:
        for old in [i for i in self.buckets if i <= newest - MAX_BUCKETS]:
            del self.buckets[old]

    def closed_through(self, now: float) -> int | None:
        """The index of the newest bucket that is closed at `now` (None: none)."""
        current = math.floor(now / BUCKET_SECONDS)
        closed = [i for i in self.buckets if i < current]
        return max(closed) if closed else None

    def series(self, signal: str, before: float | None = None) -> list[tuple[float, float]]:
        """(bucket start time, mean) of one signal, oldest first, gaps left out; only
        the buckets closed at `before` when given."""
        limit = math.floor(before / BUCKET_SECONDS) if before is not None else None
        out = []
        for index in sorted(self.buckets):
            if limit is not None and index >= limit:
                break
            mean = self.buckets[index].mean(signal)
            if mean is not None:
                out.append((float(index * BUCKET_SECONDS), mean))
        return out

    def replicas(self) -> list[tuple[float, int]]:
        return [(float(i * BUCKET_SECONDS), self.buckets[i].replicas) for i in sorted(self.buckets)]

    def signals(self) -> list[str]:
        return sorted({s for b in self.buckets.values() for s in b.counts})

    # -- the ConfigMap's data ---------------------------------------------------------

    def to_data(self, before: float) -> dict[str, str]:
        """The closed buckets (those before `before`'s minute) as the ConfigMap's data:
        columns from the first bucket to the last, `null` where there is no value."""
        limit = math.floor(before / BUCKET_SECONDS)
        indexes = [i for i in sorted(self.buckets) if i < limit]
        doc: dict[str, Any] = {"version": FORMAT_VERSION, "bucketSeconds": BUCKET_SECONDS}
        if indexes:
            first, last = indexes[0], indexes[-1]
            span = range(first, last + 1)
            doc["start"] = first * BUCKET_SECONDS
            doc["replicas"] = [
                self.buckets[i].replicas if i in self.buckets else None for i in span
            ]
            load: dict[str, list[float | None]] = {}
            for signal in sorted({s for i in indexes for s in self.buckets[i].counts}):
                column: list[float | None] = []
                for i in span:
                    bucket = self.buckets.get(i)
                    mean = bucket.mean(signal) if bucket is not None else None
                    column.append(_rounded(mean) if mean is not None else None)
                load[signal] = column
            doc["load"] = load
        return {DATA_KEY: json.dumps(doc, separators=(",", ":"), sort_keys=True)}

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> MetricHistory:
        """What `to_data` wrote. Raises ValueError naming what is wrong otherwise."""
        text = (data or {}).get(DATA_KEY)
        if text is None:
            return cls()
        try:
            doc = json.loads(text)
        except (TypeError, ValueError):
            raise ValueError(f"data.{DATA_KEY} is not JSON") from None
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"data.{DATA_KEY} is not version {FORMAT_VERSION} of the history")
        if doc.get("bucketSeconds") != BUCKET_SECONDS:
            raise ValueError(f"data.{DATA_KEY} has buckets of {doc.get('bucketSeconds')} s")
        history = cls()
        if "start" not in doc:
            return history
        start, replicas, load = doc.get("start"), doc.get("replicas"), doc.get("load") or {}
        if not isinstance(start, int) or not isinstance(replicas, list):
            raise ValueError(f"data.{DATA_KEY} needs an integer start and a replicas list")
        if not isinstance(load, dict) or any(
            not isinstance(c, list) or len(c) != len(replicas) for c in load.values()
        ):
            raise ValueError(f"data.{DATA_KEY}: each load column must be as long as replicas")
        first = start // BUCKET_SECONDS
        for offset, count in enumerate(replicas[-MAX_BUCKETS:], len(replicas[:-MAX_BUCKETS])):
            if count is None:
                continue
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError(f"data.{DATA_KEY}: replicas[{offset}] is not an integer")
            bucket = Bucket(count)
            for signal, column in load.items():
                value = column[offset]
                if value is None:
                    continue
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ValueError(f"data.{DATA_KEY}: load.{signal}[{offset}] is not a number")
                bucket.sums[str(signal)] = float(value)
                bucket.counts[str(signal)] = 1
            history.buckets[first + offset] = bucket
        return history


def encoded_size_bound(signals: int) -> int:
    """An upper bound on the ConfigMap data's size with `signals` signals in every bucket
    of the full 48 h (numbers of at most 4 significant digits, replicas up to 10000)."""
    per_number = len("-1.234e-05,")
    return 200 + MAX_BUCKETS * (len("10000,") + signals * per_number) + signals * 40
