"""The aiohttp application: routes, the gate in front of /v1, probes and metrics.

The HTTP server starts before the model loads, so the kubelet sees a live process
(`/healthz` 200) that is not ready yet (`/readyz` 503) while a large model loads.

In front of every /v1 request, in this order:
1. draining (after SIGTERM): 503, `Connection: close`; the client retries elsewhere;
2. authentication, when a token file is set: 401 without the right bearer token;
3. still loading: 503;
4. then the handler, counted in flight so that a drain knows when it may exit.
Probes and /metrics need no token (the kubelet and Prometheus do not send one).
Every error, whatever raised it, is an OpenAI error object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lmworker.serve.api import CLIENT_LEFT, Api, error_response, plain_error
from lmworker.serve.auth import BearerAuth
from lmworker.serve.metrics import ServeMetrics
from lmworker.serve.protocol import ApiError

log = logging.getLogger("lmworker.serve.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIX = "/v1/"
# nginx's code for a request whose client closed the connection before the answer.
CLIENT_CLOSED = "499"


@dataclass
class ServerState:
    """What the probes and the gate read; the CLI moves it along."""

    api: Api | None = None  # set once the model is loaded and the engine runs
    draining: bool = False
    # Why the server will never become ready (e.g. the perplexity gate refused the
    # compressed model): /readyz says it, and the operator shows it in a condition.
    refused: str | None = None
    # What it serves, for /readyz: precision (and why), perplexity before and after.
    model_info: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    engine_alive: Callable[[], bool] = lambda: True

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def ready(self) -> bool:
        return self.api is not None and not self.draining

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


def create_app(
    state: ServerState,
    metrics: ServeMetrics,
    auth: BearerAuth | None = None,
    max_request_bytes: int = 1 << 20,
) -> web.Application:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer an OpenAI error object; /v1 answers counted by status code."""
        try:
            response = await handler(request)
        except asyncio.CancelledError:  # the client went away mid-request
            if request.path.startswith(API_PREFIX):
                metrics.requests.labels(code=CLIENT_CLOSED).inc()
            raise
        except ApiError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:  # the router's 404 and 405, mostly
            if exc.status < 400:
                raise
            response = plain_error(exc.status, _router_message(request, exc))
        except Exception:  # a bug: say so, keep serving
            log.exception("Request failed path=%s", request.path)
            response = plain_error(500, "the server failed on this request; see its log")
        if request.path.startswith(API_PREFIX):
            code = CLIENT_CLOSED if request.get(CLIENT_LEFT) else str(response.status)
            metrics.requests.labels(code=code).inc()
        return response

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        if state.draining:
            raise ApiError(
                503,
                "the server is shutting down; retry, another replica will answer",
                code="shutting_down",
                headers={"Connection": "close"},
            )
        if auth is not None and not auth.allows(request.headers.get("Authorization")):
            raise ApiError(
                401,
                "a valid bearer token is required: send 'Authorization: Bearer <token>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="elasticlm"'},
            )
        if state.api is None:
            raise ApiError(
                503,
                "the model is still loading; retry shortly",
                code="loading",
                headers={"Retry-After": "5"},
            )
        state.enter()
        metrics.in_flight_requests.inc()
        try:
            return await handler(request)
        finally:
            metrics.in_flight_requests.dec()
            state.leave()

    def api() -> Api:
        assert state.api is not None, "the gate lets /v1 requests through once loaded"
        return state.api

    async def completions(request: web.Request) -> web.StreamResponse:
        return await api().completions(request)

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        return await api().chat_completions(request)

    async def models(request: web.Request) -> web.StreamResponse:
        return await api().models(request)

    async def model(request: web.Request) -> web.StreamResponse:
        return await api().model(request)

    async def healthz(request: web.Request) -> web.Response:
        if not state.engine_alive():
            return web.Response(status=500, text="the engine thread died; see the log\n")
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        """200 when serving, else 503; the JSON body says which state and why (the
        operator reads it: lmoperator/server_metrics.py)."""
        if state.draining:
            return _readiness(503, "draining", "shutting down")
        if state.refused is not None:
            return _readiness(503, "refused", state.refused)
        if state.api is None:
            return _readiness(503, "loading", "loading the model")
        return _readiness(200, "ready", "", state.model_info)

    async def metrics_page(request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    # The gate reads bodies itself, with its own limit; aiohttp's is a backstop.
    app = web.Application(middlewares=[errors, gate], client_max_size=max_request_bytes)
    app.add_routes(
        [
            web.post("/v1/completions", completions),
            web.post("/v1/chat/completions", chat_completions),
            web.get("/v1/models", models),
            web.get("/v1/models/{name}", model),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_page),
        ]
    )
    return app


def _readiness(status: int, name: str, message: str, model: Any = None) -> web.Response:
    body: dict[str, Any] = {"ready": status == 200, "state": name, "message": message}
    if model:
        body["model"] = model
    return web.json_response(body, status=status)


def _router_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return (
            f"no such endpoint: {request.path}; try /v1/completions, /v1/chat/completions "
            "or /v1/models"
        )
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    return exc.text or exc.reason
