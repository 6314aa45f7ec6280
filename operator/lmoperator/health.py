"""The operator's HTTP port (`--metrics-port`): Prometheus metrics and two probes.

- `GET /healthz` (liveness): 200 while the process works as it should, 503 with the
  reason otherwise. With `--leader-elect` a standby is healthy too: it is not leading,
  but restarting it would not help.
- `GET /readyz` (readiness): 200 once the operator is up ("leader" or "standby" with
  `--leader-elect`), 503 before.
- Every other path serves the metrics, as `prometheus_client.start_http_server` does.

The server runs in threads of its own, so the probes answer even while the event loop
is busy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

#: A probe: (passes, what it found, in words).
Check = Callable[[], tuple[bool, str]]


def always_ok(message: str) -> Check:
    return lambda: (True, message)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


def application(health: Check, ready: Check) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        check = {"/healthz": health, "/readyz": ready}.get(environ.get("PATH_INFO", ""))
        if check is None:
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        passed, message = check()
        status = "200 OK" if passed else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{message}\n".encode()]

    return app


def serve(port: int, health: Check, ready: Check, address: str = "0.0.0.0") -> WSGIServer:
    """Serve metrics and probes on `port` in a daemon thread; returns the server."""
    server = make_server(
        address,
        port,
        application(health, ready),
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
