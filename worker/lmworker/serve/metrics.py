"""The server's Prometheus metrics (prefix `elasticlm_serve_`).

The operator reads a pod's load from `elasticlm_serve_running` (sequences being
generated, each holding a KV-cache slot) plus `elasticlm_serve_waiting` (queued for a
slot): their sum is the pod's in-flight requests. The names are part of the contract
with `lmoperator`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "elasticlm_serve_"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """Counters and gauges, updated by the HTTP layer and (as EngineObserver) the engine."""

    def __init__(self, kv_slots: int) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests",
            "API requests answered, by HTTP status code.",
            ["code"],
            registry=r,
        )
        self.running = Gauge(
            PREFIX + "running", "Requests being generated (each holds a KV-cache slot).", registry=r
        )
        self.waiting = Gauge(PREFIX + "waiting", "Requests queued for a KV-cache slot.", registry=r)
        self.kv_slots_in_use = Gauge(PREFIX + "kv_slots_in_use", "KV-cache slots held.", registry=r)
        self.kv_slots = Gauge(PREFIX + "kv_slots", "KV-cache slots (--max-batch-size).", registry=r)
        self.kv_slots.set(kv_slots)
        self.time_to_first_token = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "From a request's arrival at the engine to its first generated token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            PREFIX + "inter_token_latency_seconds",
            "Between consecutive tokens of one request.",
            buckets=_TOKEN_GAP_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size",
            "Sequences in each forward pass.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            PREFIX + "step_seconds",
            "Duration of each forward pass, sampling included.",
            buckets=_TOKEN_GAP_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            PREFIX + "prompt_tokens", "Prompt tokens of admitted requests.", registry=r
        )
        self.generated_tokens = Counter(
            PREFIX + "generated_tokens", "Tokens generated.", registry=r
        )
        self.in_flight_requests = Gauge(
            PREFIX + "in_flight_requests",
            "/v1 requests being handled, from reading the body to the last byte sent "
            "(what a SIGTERM drain waits for).",
            registry=r,
        )
        self.ready = Gauge(PREFIX + "ready", "1 while the server takes requests.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- EngineObserver --------------------------------------------------------------

    def step(self, batch_size: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(batch_size)
        self.step_seconds.observe(seconds)

    def first_token(self, seconds: float) -> None:
        self.time_to_first_token.observe(seconds)
        self.generated_tokens.inc()

    def inter_token(self, seconds: float) -> None:
        self.inter_token_latency.observe(seconds)
        self.generated_tokens.inc()

    def occupancy(self, running: int, waiting: int) -> None:
        self.running.set(running)
        self.kv_slots_in_use.set(running)
        self.waiting.set(waiting)
