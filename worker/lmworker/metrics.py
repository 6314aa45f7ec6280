"""A worker's Prometheus metrics and its small HTTP endpoint.

`/metrics` (Prometheus text), `/ready` (200 while the worker trains in a round, or while
a warm spare stands by; the pod's readiness probe), `/healthz`, and on a warm spare
`POST /promote` (the operator's order to become a worker; it must carry the job's
rendezvous secret as `Authorization: Bearer <token>`). The operator reads rank 0's
`/metrics` for the job's status; the metric names are part of the contract with `lmoperator`.
"""

from __future__ import annotations

import hmac
import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lmworker.config import PROMOTE_PATH


class TrainMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"elasticlm_train_{name}", doc, registry=r)

        self.step = gauge("step", "Optimizer steps completed.")
        self.target_steps = gauge("target_steps", "Steps the job trains for.")
        self.loss = gauge("loss", "Training loss (nats per token) of the latest step.")
        self.validation_loss = gauge(
            "validation_loss", "Loss on the held-out text, measured at each checkpoint."
        )
        self.validation_step = gauge(
            "validation_step", "Step at which validation_loss was measured (-1: not yet)."
        )
        self.initial_validation_loss = gauge(
            "initial_validation_loss", "Loss on the held-out text before the first step."
        )
        # elasticlm_train_precision_info{requested, precision, reason} 1
        self.precision = Info(
            "elasticlm_train_precision",
            "The precision training computes in, and why it was chosen.",
            registry=r,
        )
        self.tokens_per_second = gauge(
            "tokens_per_second", "Tokens per second across all workers, latest step."
        )
        self.step_seconds = gauge("step_seconds", "Duration of the latest step.")
        self.world_size = gauge("world_size", "Workers in the current round.")
        self.rank = gauge("rank", "This worker's rank in the current round (-1: none).")
        self.round = gauge("round", "The current rendezvous round.")
        self.last_checkpoint_step = gauge("last_checkpoint_step", "Step of the newest checkpoint.")
        self.last_checkpoint_time = gauge(
            "last_checkpoint_timestamp_seconds", "When the newest checkpoint was completed."
        )
        self.checkpoint_seconds = gauge("checkpoint_seconds", "Duration of the latest save.")
        self.reform_seconds = gauge(
            "reform_seconds", "Time the latest round took to form and hand over state."
        )
        self.rounds = Counter("elasticlm_train_rounds", "Rounds this worker joined.", registry=r)
        self.group_failures = Counter(
            "elasticlm_train_group_failures",
            "Rounds that ended in a failed collective (a worker lost).",
            registry=r,
        )
        self.rank.set(-1)
        self.validation_step.set(-1)
        # Not measured yet: NaN, which readers skip (a gauge would otherwise read 0).
        self.validation_loss.set(float("nan"))
        self.initial_validation_loss.set(float("nan"))
        self.ready = threading.Event()
        # A warm spare standing by (loaded and registered, outside the world).
        self.standby = threading.Event()
        self.spare = gauge("spare", "1 while this pod is a warm spare standing by.")
        # Set by a spare's runtime: promote(index, expected) -> whether it was accepted.
        self.on_promote: Callable[[int, int], bool] | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up before its answer is written (a probe or a scrape timing
    out) is no error of the worker's: socketserver would print a traceback of it into
    the training log."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


MAX_PROMOTE_BODY = 1024


def promotion_request(
    secret: bytes | None, authorization: str | None, body: bytes
) -> tuple[int, str, tuple[int, int] | None]:
    """Check a promotion request: (HTTP status, message, (index, expected) when valid).

    Refused without a secret on this side (a spare of a job without one cannot tell the
    operator from anyone else) and with a wrong one; the comparison takes constant time.
    """
    if secret is None:
        return 403, "this worker has no rendezvous secret, so it accepts no promotion", None
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), secret):
        return 401, "promotion needs the job's rendezvous secret as a Bearer token", None
    try:
        order = json.loads(body)
        index, expected = order["index"], order.get("expected", 0)
    except (ValueError, KeyError, TypeError):
        return 400, 'the body must be JSON {"index": <worker index>, "expected": <replicas>}', None
    if not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (index, expected)
    ):
        return 400, "index and expected must be integers >= 0", None
    return 200, "ok", (index, expected)


def serve(
    metrics: TrainMetrics, host: str, port: int, secret: bytes | None = None
) -> ThreadingHTTPServer:
    """Serve the endpoints in a daemon thread; `secret` authenticates promotions."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/ready":
                if metrics.ready.is_set():
                    self._reply(200, b"ready\n")
                elif metrics.standby.is_set():
                    self._reply(200, b"standing by\n")
                else:
                    self._reply(503, b"not training\n")
            elif path == "/healthz":
                self._reply(200, b"ok\n")
            else:
                self._reply(404, b"not found: try /metrics, /ready or /healthz\n")

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != PROMOTE_PATH:
                self._reply(404, f"not found: POST only {PROMOTE_PATH}\n".encode())
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_PROMOTE_BODY:
                self._reply(413, b"body too large\n")
                return
            code, message, order = promotion_request(
                secret, self.headers.get("Authorization"), self.rfile.read(length)
            )
            promote = metrics.on_promote
            if order is not None:
                if promote is None:
                    code, message = 409, "not a spare standing by"
                elif not promote(*order):
                    code, message = 409, "promoted already, to another index"
            self._reply(code, f"{message}\n".encode())

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every second would drown the training log

    server = _QuietServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
