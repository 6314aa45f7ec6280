"""A stand-in for a Prometheus server's instant-query API, for tests.

It answers `GET /api/v1/query?query=...` (and the form-encoded POST) in the format of
https://prometheus.io/docs/prometheus/latest/querying/api/: `{"status": "success",
"data": {"resultType": "vector" | "scalar", "result": ...}}` with sample values as
strings, `{"status": "error", "errorType": ..., "error": ...}` with HTTP 400 (bad_data),
422 (execution) or 503 (timeout), and 404 for other paths. What a query returns is set
by the test; an unset query answers an empty vector, as Prometheus does for a series it
does not have.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

_ERROR_STATUS = {"bad_data": 400, "execution": 422, "timeout": 503, "internal": 500}


class PrometheusStandIn:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        self._default: dict[str, Any] | None = None
        self.queries: list[str] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                self._answer(url.path, parse_qs(url.query))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                self._answer(urlparse(self.path).path, form)

            def _answer(self, path: str, params: Mapping[str, list[str]]) -> None:
                if path != "/api/v1/query":
                    self._send(404, b"404 page not found\n", "text/plain")
                    return
                query = (params.get("query") or [""])[0]
                status, doc = standin.answer(query)
                self._send(status, json.dumps(doc).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PrometheusStandIn:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what the queries return ----------------------------------------------------

    def _set(self, query: str | None, answer: dict[str, Any]) -> None:
        with self._lock:
            if query is None:
                self._default = answer
            else:
                self._answers[query] = answer

    def vector(self, query: str | None, *series: tuple[Mapping[str, str], float]) -> None:
        """The query (None: every query not set otherwise) returns these series."""
        self._set(query, {"kind": "vector", "series": [(dict(m), v) for m, v in series]})

    def scalar(self, query: str | None, value: float) -> None:
        self._set(query, {"kind": "scalar", "value": value})

    def error(self, query: str | None, error_type: str, message: str) -> None:
        self._set(query, {"kind": "error", "type": error_type, "message": message})

    def answer(self, query: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.queries.append(query)
            spec = self._answers.get(query, self._default)
        now = round(time.time(), 3)
        if spec is None:
            return 200, {"status": "success", "data": {"resultType": "vector", "result": []}}
        if spec["kind"] == "error":
            return _ERROR_STATUS.get(spec["type"], 400), {
                "status": "error",
                "errorType": spec["type"],
                "error": spec["message"],
            }
        if spec["kind"] == "scalar":
            return 200, {
                "status": "success",
                "data": {"resultType": "scalar", "result": [now, _text(spec["value"])]},
            }
        return 200, {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": m, "value": [now, _text(v)]} for m, v in spec["series"]],
            },
        }


def _text(value: float) -> str:
    """A sample value as Prometheus writes it."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))
