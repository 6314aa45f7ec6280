"""What a server pod (lmworker.serve) reports, parsed (pure; `scrape.py` fetches it).

Two endpoints, the contract with lmworker.serve: `/metrics` (Prometheus text; the
operator reads the requests running and waiting, to rank pods by load before a
scale-down and to feed the autoscaler, and the KV-cache slots in use) and `/readyz`
(JSON: whether the server takes requests, its state and
message when it does not, and what it serves: the precision it chose and the held-out
perplexity before and after compression).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from lmoperator.worker_metrics import sample_values

RUNNING = "elasticlm_serve_running"
WAITING = "elasticlm_serve_waiting"
KV_SLOTS_IN_USE = "elasticlm_serve_kv_slots_in_use"
KV_SLOTS = "elasticlm_serve_kv_slots"


@dataclass(frozen=True)
class ServerLoad:
    """A server's load gauges from one scrape (None: the server did not expose it)."""

    running: float | None = None
    waiting: float | None = None
    kv_slots_in_use: float | None = None
    kv_slots: float | None = None

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


def parse_server_load(text: str) -> ServerLoad:
    """Raises ValueError when the text is not the Prometheus exposition format."""
    values = sample_values(text)
    return ServerLoad(
        running=values.get(RUNNING),
        waiting=values.get(WAITING),
        kv_slots_in_use=values.get(KV_SLOTS_IN_USE),
        kv_slots=values.get(KV_SLOTS),
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
