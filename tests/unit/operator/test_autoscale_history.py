"""The autoscaler's metric history (autoscale/history.py): 1-minute buckets for 48 h,
gaps kept as gaps, a bounded ConfigMap encoding that reads back what it wrote."""

from __future__ import annotations

import json
import random

import pytest

from lmoperator.autoscale.history import (
    DATA_KEY,
    MAX_BUCKETS,
    MetricHistory,
    encoded_size_bound,
)

T0 = 1_767_268_800.0  # a minute boundary


def test_buckets_hold_the_minutes_mean_and_the_last_replica_count() -> None:
    h = MetricHistory()
    h.observe(T0 + 1, 1, {"InFlightRequests": 2.0})
    h.observe(T0 + 30, 2, {"InFlightRequests": 4.0, "LatencyP95": 0.5})
    h.observe(T0 + 61, 2, {})  # a pass that read nothing: no value, not zero
    assert h.series("InFlightRequests") == [(T0, 3.0)]
    assert h.series("LatencyP95") == [(T0, 0.5)]
    assert h.replicas() == [(T0, 2), (T0 + 60, 2)]
    assert h.closed_through(T0 + 61) == int(T0 // 60)


def test_only_closed_buckets_are_written_and_gaps_stay_gaps() -> None:
    h = MetricHistory()
    h.observe(T0, 1, {"QueueDepth": 1.0})
    h.observe(T0 + 120, 3, {"QueueDepth": 5.0})  # minute 1 had no pass at all
    h.observe(T0 + 180, 3, {"QueueDepth": 9.0})  # still open at T0 + 190
    data = h.to_data(T0 + 190)
    doc = json.loads(data[DATA_KEY])
    assert doc["replicas"] == [1, None, 3]
    assert doc["load"] == {"QueueDepth": [1.0, None, 5.0]}
    back = MetricHistory.from_data(data)
    assert back.series("QueueDepth") == [(T0, 1.0), (T0 + 120, 5.0)]


def test_48_hours_at_most_and_the_configmap_stays_small() -> None:
    h = MetricHistory()
    rng = random.Random(3)
    signals = ["InFlightRequests", "QueueDepth", "RequestsPerSecond", "TokensPerSecond",
               "LatencyP95", "KVCacheUsage"]  # fmt: skip
    minutes = MAX_BUCKETS + 100
    for minute in range(minutes):
        h.observe(T0 + 60 * minute, rng.randint(1, 10000),
                  {s: rng.uniform(0, 1e5) * rng.choice([1e-6, 1]) for s in signals})  # fmt: skip
    assert len(h.buckets) == MAX_BUCKETS
    data = h.to_data(T0 + 60 * (minutes - 1))  # during the newest minute
    size = len(data[DATA_KEY])
    assert size <= encoded_size_bound(len(signals)) < 1 << 20  # a ConfigMap's limit: 1 MiB
    back = MetricHistory.from_data(data)
    assert len(back.buckets) == MAX_BUCKETS - 1  # the newest minute was still open
    assert min(back.buckets) == int(T0 // 60) + 100  # the oldest dropped first


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{nope", "is not JSON"),
        ('{"version": 9, "bucketSeconds": 60}', "is not version 1"),
        ('{"version": 1, "bucketSeconds": 10}', "buckets of 10 s"),
        (
            '{"version": 1, "bucketSeconds": 60, "start": 60, "replicas": [1], "load": '
            '{"QueueDepth": [1, 2]}}',
            "as long as replicas",
        ),
        (
            '{"version": 1, "bucketSeconds": 60, "start": 60, "replicas": ["x"]}',
            r"replicas\[0\] is not an integer",
        ),
    ],
)
def test_what_was_not_written_by_to_data_is_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        MetricHistory.from_data({DATA_KEY: text})


def test_no_configmap_or_an_empty_history_reads_as_empty() -> None:
    assert MetricHistory.from_data(None).buckets == {}
    assert MetricHistory.from_data(MetricHistory().to_data(T0)).buckets == {}
