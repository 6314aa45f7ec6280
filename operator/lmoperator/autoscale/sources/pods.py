"""Source Pods: the server pods' own `/metrics`, scraped by the operator.

`lmoperator.scrape` fetches each ready pod's `/metrics` concurrently, each with a
timeout, and parses it with prometheus-client's parser (`server_metrics`); a pod that did
not answer or whose text did not parse has no `ServerLoad`. This module turns those
loads into the policy's signals:

- gauges read as they are: `InFlightRequests` (running + waiting), `QueueDepth`
  (waiting), `KVCacheUsage` (slots in use / slots);
- rates between this scrape and the pod's previous one: `RequestsPerSecond` (from
  `elasticlm_serve_requests_total`, every code), `TokensPerSecond` (from
  `elasticlm_serve_generated_tokens_total`); a counter that went down restarted, and
  counts from zero, as Prometheus's `rate()` does;
- `LatencyP95`: the 95th percentile of the time to first token over the requests that
  got one between the two scrapes, interpolated within the histogram's buckets as
  Prometheus's `histogram_quantile()` does.

A pod's first scrape has no rate yet, and an interval in which no request got its first
token has no latency: those signals are missing for that pod (the policy's missing-pod
rule), never zero. In particular a saturated server whose queued requests wait for a
KV-cache slot produces no first token, so its latency is unknown rather than low: pair
`LatencyP95` with a demand signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmoperator.autoscale.policy import Signal
from lmoperator.autoscale.sources import Problem, ProblemKind, Reading, is_ready, pod_report
from lmoperator.server_metrics import ServerLoad

LATENCY_QUANTILE = 0.95
# Signals that need two scrapes of a pod.
RATE_SIGNALS = frozenset({Signal.REQUESTS_PER_SECOND, Signal.TOKENS_PER_SECOND, Signal.LATENCY_P95})


def gauge_values(load: ServerLoad) -> dict[Signal, float]:
    """The signals one scrape's gauges give (absent when the server does not expose them)."""
    values: dict[Signal, float] = {}
    if load.in_flight is not None:
        values[Signal.IN_FLIGHT_REQUESTS] = float(load.in_flight)
    if load.waiting is not None:
        values[Signal.QUEUE_DEPTH] = load.waiting
    if load.kv_cache_usage is not None:
        values[Signal.KV_CACHE_USAGE] = load.kv_cache_usage
    return values


def _increase(now: float | None, before: float | None) -> float | None:
    if now is None or before is None:
        return None
    return now - before if now >= before else now  # a reset counts from zero


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative (upper bound, count) buckets, ascending with +Inf
    last, as Prometheus's histogram_quantile(); None when they hold no observation."""
    if not buckets or buckets[-1][0] != math.inf:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for index, (upper, count) in enumerate(buckets):
        if count >= rank:
            if upper == math.inf:
                # Prometheus answers the highest finite bound for the +Inf bucket.
                return buckets[index - 1][0] if index > 0 else None
            if index == 0 and upper <= 0:
                return upper
            in_bucket = count - below
            if in_bucket <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / in_bucket
        lower, below = upper, count
    return None


def bucket_increase(
    now: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> tuple[tuple[float, float], ...]:
    """The observations between two scrapes of a cumulative histogram (a reset, or a
    change of the bucket layout, counts from zero)."""
    earlier = dict(before)
    if set(earlier) != {bound for bound, _ in now} or any(
        count < earlier[bound] for bound, count in now
    ):
        return tuple(now)
    return tuple((bound, count - earlier[bound]) for bound, count in now)


def rate_values(load: ServerLoad, previous: ServerLoad, seconds: float) -> dict[Signal, float]:
    """The rate signals between two scrapes of one pod `seconds` apart."""
    values: dict[Signal, float] = {}
    if seconds <= 0:
        return values
    requests = _increase(load.requests_total, previous.requests_total)
    if requests is not None:
        values[Signal.REQUESTS_PER_SECOND] = requests / seconds
    tokens = _increase(load.generated_tokens_total, previous.generated_tokens_total)
    if tokens is not None:
        values[Signal.TOKENS_PER_SECOND] = tokens / seconds
    if load.ttft_buckets and previous.ttft_buckets:
        latency = histogram_quantile(
            LATENCY_QUANTILE, bucket_increase(load.ttft_buckets, previous.ttft_buckets)
        )
        if latency is not None:
            values[Signal.LATENCY_P95] = latency
    return values


_NOT_EXPOSED = {
    Signal.IN_FLIGHT_REQUESTS: lambda load: load.in_flight is None,
    Signal.QUEUE_DEPTH: lambda load: load.waiting is None,
    Signal.KV_CACHE_USAGE: lambda load: load.kv_cache_usage is None,
    Signal.REQUESTS_PER_SECOND: lambda load: load.requests_total is None,
    Signal.TOKENS_PER_SECOND: lambda load: load.generated_tokens_total is None,
    Signal.LATENCY_P95: lambda load: not load.ttft_buckets,
}


@dataclass
class PodsSource:
    """Source Pods for one service: remembers each pod's previous scrape for the rates.

    `read` is called once per scrape; called again with the same scrape time it gives
    the same answer (the rates of the pair it already saw).
    """

    previous: dict[str, tuple[float, ServerLoad]] = field(default_factory=dict)
    rates: dict[str, tuple[float, dict[Signal, float]]] = field(default_factory=dict)

    def _rates(self, name: str, load: ServerLoad, at: float) -> dict[Signal, float]:
        cached = self.rates.get(name)
        if cached is not None and cached[0] == at:
            return cached[1]
        before = self.previous.get(name)
        values = rate_values(load, before[1], at - before[0]) if before is not None else {}
        self.previous[name] = (at, load)
        self.rates[name] = (at, values)
        return values

    def read(
        self,
        pods: Sequence[Mapping[str, Any]],
        loads: Mapping[str, ServerLoad],
        scraped_at: float | None,
        wanted: frozenset[Signal] = frozenset(Signal),
    ) -> Reading:
        """The reports of one scrape (`scraped_at`, seconds since the epoch; None: never
        scraped) and the problems: ready pods without an answer, and signals a server
        does not expose at all."""
        reports = []
        problems = []
        names = set()
        for pod in pods:
            name = str((pod.get("metadata") or {}).get("name") or "")
            names.add(name)
            load = loads.get(name)
            values: dict[Signal, float] = {}
            if load is not None and scraped_at is not None:
                values = gauge_values(load)
                if wanted & RATE_SIGNALS:
                    values.update(self._rates(name, load, scraped_at))
                for signal in sorted(wanted):
                    if _NOT_EXPOSED[signal](load):
                        problems.append(
                            Problem(
                                signal,
                                ProblemKind.EMPTY,
                                f"pod {name} does not expose what {signal} is computed from",
                            )
                        )
            elif scraped_at is not None and is_ready(pod):
                problems.append(
                    Problem(
                        None,
                        ProblemKind.UNREACHABLE,
                        f"pod {name}'s /metrics did not answer in time or did not parse",
                    )
                )
            reports.append(pod_report(pod, values, scraped_at))
        for gone in set(self.previous) - names:
            del self.previous[gone]
            self.rates.pop(gone, None)
        return Reading(reports, tuple(problems))
