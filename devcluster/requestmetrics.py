"""Request counts of the API server, served at `/metrics` as kube-apiserver serves them.

`install(app)` adds a middleware that counts every request when it completes, as
`apiserver_request_total`, with kube-apiserver's labels: `verb` (GET, LIST, WATCH,
POST, PUT, PATCH, APPLY, DELETE, DELETECOLLECTION, as kube-apiserver names them: POST
is a create, PUT an update), `group`, `version`, `resource`, `subresource`, `scope`
(resource, namespace or cluster; empty for paths outside the resource API) and `code`
(the HTTP status; 0 when the client went away before an answer). devcluster adds one
label of its own, `client`: the first product of the User-Agent header (`kopf`,
`kubectl`, `OpenAPI-Generator` for the Python client, `kubelet` for devcluster's own
kubelet), so that a test can tell its own requests from those of the program it
measures. A watch is counted when it ends, as in kube-apiserver; the watches open now
are the gauge `apiserver_longrunning_requests`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

LABELS = ("verb", "group", "version", "resource", "subresource", "scope", "code", "client")
CLIENT_MAX = 40
TRUE = ("1", "true", "True")


@dataclass(frozen=True)
class RequestInfo:
    """What kube-apiserver's request-info resolver makes of a request, for its metrics."""

    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    scope: str = ""


def request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """The verb and resource of a request, named as kube-apiserver's metrics name them."""
    method = method.upper()
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return RequestInfo(verb=method)  # discovery, /version, /healthz, /openapi, ...
    watch = rest[:1] == ["watch"]
    if watch:
        rest = rest[1:]
    if not rest:
        return RequestInfo(verb=method, group=group, version=version)
    namespaced = rest[0] == "namespaces" and len(rest) >= 3
    if namespaced and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
        rest = rest[2:]
    else:
        namespaced = False
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = "/".join(rest[2:])
    scope = "resource" if name else "namespace" if namespaced else "cluster"
    watch = watch or query.get("watch") in TRUE
    if method == "GET":
        verb = "WATCH" if watch else "GET" if name else "LIST"
    elif method == "DELETE" and not name:
        verb = "DELETECOLLECTION"
    else:
        verb = method
    return RequestInfo(verb, group, version, resource, subresource, scope)


def client_of(user_agent: str) -> str:
    """The User-Agent's first product, without its version: `kopf/1.45` -> `kopf`."""
    product = user_agent.strip().split(" ", 1)[0].split("/", 1)[0]
    return product[:CLIENT_MAX] or "unknown"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class RequestMetrics:
    """The counts, and the aiohttp middleware and handler that keep and serve them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, ...]] = Counter()
        self.watches: Counter[tuple[str, ...]] = Counter()

    def record(self, info: RequestInfo, code: int, client: str) -> None:
        key = (
            info.verb,
            info.group,
            info.version,
            info.resource,
            info.subresource,
            info.scope,
            str(code),
            client,
        )
        with self._lock:
            self.requests[key] += 1

    def total(self, **labels: str) -> int:
        """The sum of the counts whose labels match `labels` (for tests and tools)."""
        index = {name: LABELS.index(name) for name in labels}
        with self._lock:
            return sum(
                n
                for key, n in self.requests.items()
                if all(key[index[k]] == v for k, v in labels.items())
            )

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        info = request_info(request.method, request.path, request.query)
        client = client_of(request.headers.get("User-Agent", ""))
        watch_key = (info.group, info.version, info.resource, info.scope)
        if info.verb == "WATCH":
            with self._lock:
                self.watches[watch_key] += 1
        code = 0
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            code = 500
            raise
        finally:
            self.record(info, code, client)
            if info.verb == "WATCH":
                with self._lock:
                    self.watches[watch_key] -= 1

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        with self._lock:
            requests = sorted(self.requests.items())
            watches = sorted(self.watches.items())
        lines = [
            "# HELP apiserver_request_total Counter of apiserver requests broken out for "
            "each verb, group, version, resource, scope, HTTP response code and client.",
            "# TYPE apiserver_request_total counter",
        ]
        for key, n in requests:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(LABELS, key, strict=True))
            lines.append(f"apiserver_request_total{{{labels}}} {n}")
        lines += [
            "# HELP apiserver_longrunning_requests Gauge of all active long-running apiserver "
            "requests broken out by verb, group, version, resource and scope.",
            "# TYPE apiserver_longrunning_requests gauge",
        ]
        for (group, version, resource, scope), n in watches:
            labels = (
                f'verb="WATCH",group="{_escape(group)}",version="{_escape(version)}",'
                f'resource="{_escape(resource)}",scope="{scope}"'
            )
            lines.append(f"apiserver_longrunning_requests{{{labels}}} {n}")
        return "\n".join(lines) + "\n"

    async def serve(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.render().encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


REQUEST_METRICS_KEY = web.AppKey("devcluster.requestmetrics", RequestMetrics)


def install(app: web.Application) -> RequestMetrics:
    """Count `app`'s requests (outermost middleware) and serve them at GET /metrics.

    Call it before the catch-all routes are added: routes match in the order they were.
    """
    metrics = RequestMetrics()
    app[REQUEST_METRICS_KEY] = metrics
    app.middlewares.insert(0, metrics.middleware)
    app.router.add_get("/metrics", metrics.serve)
    return metrics
