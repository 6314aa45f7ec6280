"""What a server pod (lmworker.serve) reports, parsed (pure; `scrape.py` fetches it).

Two endpoints, the contract with lmworker.serve: `/metrics` (Prometheus text, parsed
with prometheus-client's parser; the operator reads the requests running and waiting,
to rank pods by load before a scale-down and to feed the autoscaler, the KV-cache slots
in use, and the counters and the time-to-first-token histogram that the autoscaler turns
into rates between two scrapes) and `/readyz`
(JSON: whether the server takes requests, its state and
message when it does not, and what it serves: the precision it chose and the held-out
perplexity before and after compression).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

RUNNING = "elasticlm_serve_running"
WAITING = "elasticlm_serve_waiting"
KV_SLOTS_IN_USE = "elasticlm_serve_kv_slots_in_use"
KV_SLOTS = "elasticlm_serve_kv_slots"
REQUESTS_TOTAL = "elasticlm_serve_requests_total"  # by code; summed
GENERATED_TOKENS_TOTAL = "elasticlm_serve_generated_tokens_total"
TTFT_BUCKET = "elasticlm_serve_time_to_first_token_seconds_bucket"


@dataclass(frozen=True)
class ServerLoad:
    """A server's load gauges from one scrape (None: the server did not expose it)."""

    running: float | None = None
    waiting: float | None = None
    kv_slots_in_use: float | None = None
    kv_slots: float | None = None
    # Counters (since the server started) and the cumulative time-to-first-token
    # histogram as (upper bound, count) pairs, ascending, +Inf last; empty: not exposed.
    requests_total: float | None = None
    generated_tokens_total: float | None = None
    ttft_buckets: tuple[tuple[float, float], ...] = field(default=())

    @property
    def in_flight(self) -> int | None:
        """Requests running plus waiting, or None when the server said neither."""
        if self.running is None and self.waiting is None:
            return None
        return int((self.running or 0) + (self.waiting or 0))

    @property
    def kv_cache_usage(self) -> float | None:
        """The share of KV-cache slots held (0..1), or None without both gauges."""
        if self.kv_slots_in_use is None or not self.kv_slots:
            return None
        return self.kv_slots_in_use / self.kv_slots


@dataclass(frozen=True)
class Readiness:
    """A server's /readyz answer."""

    ready: bool
    state: str  # ready | loading | refused | draining
    message: str = ""
    precision: str | None = None
    perplexity_before: float | None = None
    perplexity_after: float | None = None


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    try:
        return [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except (ValueError, TypeError, IndexError) as exc:
        # prometheus-client's parser says "invalid metric name: ..." and the like.
        raise ValueError(f"not a Prometheus sample text: {str(exc)[:120]}") from None


def parse_server_load(text: str) -> ServerLoad:
    """Raises ValueError when the text is not the Prometheus exposition format."""
    gauges: dict[str, float] = {}
    totals: dict[str, float] = defaultdict(float)
    buckets: dict[float, float] = {}
    for name, labels, value in _samples(text):
        if not math.isfinite(value):
            continue
        if name in (REQUESTS_TOTAL, GENERATED_TOKENS_TOTAL):
            totals[name] += value
        elif name == TTFT_BUCKET:
            try:
                buckets[float(labels.get("le", ""))] = value
            except ValueError:
                raise ValueError(f"{TTFT_BUCKET} has a bucket bound {labels.get('le')!r}") from None
        elif name not in gauges:
            gauges[name] = value
    return ServerLoad(
        running=gauges.get(RUNNING),
        waiting=gauges.get(WAITING),
        kv_slots_in_use=gauges.get(KV_SLOTS_IN_USE),
        kv_slots=gauges.get(KV_SLOTS),
        requests_total=totals.get(REQUESTS_TOTAL),
        generated_tokens_total=totals.get(GENERATED_TOKENS_TOTAL),
        ttft_buckets=tuple(sorted(buckets.items())),
    )


def parse_in_flight(text: str) -> int | None:
    """Requests running plus waiting, or None when the server did not say.

    Raises ValueError when the text is not the Prometheus exposition format.
    """
    return parse_server_load(text).in_flight


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def parse_readiness(text: str) -> Readiness:
    """Raises ValueError when the body is not the JSON object lmworker.serve answers."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("ready"), bool):
        raise ValueError("not a readiness answer: no boolean 'ready'")
    model = doc.get("model")
    if not isinstance(model, dict):
        model = {}
    precision = model.get("precision")
    return Readiness(
        ready=doc["ready"],
        state=str(doc.get("state") or ("ready" if doc["ready"] else "unknown")),
        message=str(doc.get("message") or "")[:1024],
        precision=precision if isinstance(precision, str) else None,
        perplexity_before=_number(model.get("perplexityBefore")),
        perplexity_after=_number(model.get("perplexityAfter")),
    )
