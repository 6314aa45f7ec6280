"""Entry points: `create_app` builds a Cluster, its controllers and the server;
`ServerThread` runs one in a thread; `serve` starts an app on a port.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from devcluster import DEFAULT_KUBERNETES_VERSION
from devcluster.apiserver.cluster import DEFAULT_NODE, Cluster
from devcluster.apiserver.routes import APIServer
from devcluster.apiserver.security import Security
from devcluster.auth.audit import AuditLog
from devcluster.auth.controllers import AuthControllers
from devcluster.auth.tokens import TokenSigner
from devcluster.gc import Controllers
from devcluster.scheduling import DEFAULT_NODE_CPU, DEFAULT_NODE_MEMORY
from devcluster.workloads.loop import WorkloadControllers


def create_app(
    state_dir: Path | None,
    *,
    persist: bool = False,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    simulate: bool = False,
    node_name: str = DEFAULT_NODE,
    history_size: int = 20000,
    bookmark_interval: float = 30.0,
    max_watch_seconds: float = 1800.0,
    admin_token: str | None = None,
    anonymous: str = "admin",
    audit_log: Path | str | None = None,
    ca_cert: bytes | None = None,
    node_cpu: str = DEFAULT_NODE_CPU,
    node_memory: str = DEFAULT_NODE_MEMORY,
) -> web.Application:
    """The API server as an aiohttp application.

    `state_dir` is where the kubelet writes pod logs (served by `pods/log`); with
    `persist`, the objects are also snapshotted to `paths.snapshot_file(state_dir)` and
    reloaded from it. `simulate` deletes pods at once (no kubelet terminates them).
    The `Cluster` is available as `app[CLUSTER_KEY]`, its built-in controllers (which
    attach to it here) as `app[CONTROLLERS_KEY]`, the ReplicaSet and Deployment
    controllers as `app[WORKLOADS_KEY]`, authentication and authorization as
    `app[SECURITY_KEY]`.

    `admin_token` is the bearer token of the unrestricted `kubernetes-admin` user (a
    random one when not given); `anonymous` says who a request without credentials is
    ("admin": the unrestricted `system:unsecured`; "anonymous": `system:anonymous`,
    under RBAC); `audit_log` is a file for audit events (JSON lines; "-" for standard
    output; none by default); `ca_cert` (PEM) is the CA of the HTTPS endpoint, published
    to every namespace as the ConfigMap kube-root-ca.crt. With `persist`, the key that
    signs service-account tokens is kept in `state_dir/pki` so that tokens survive a
    restart. `node_cpu` and `node_memory` are what the node offers to pods' requests.
    """
    cluster = Cluster(
        state_dir,
        persist=persist,
        node_name=node_name,
        simulate=simulate,
        kubernetes_version=kubernetes_version,
        history_size=history_size,
        node_cpu=node_cpu,
        node_memory=node_memory,
    )
    cluster.root_ca = ca_cert is not None
    key_file = state_dir / "pki" / "service-account.key" if (persist and state_dir) else None
    signer = TokenSigner.load_or_create(key_file)
    security = Security(
        cluster.store,
        signer,
        admin_token or secrets.token_urlsafe(32),
        anonymous=anonymous,
        audit_log=AuditLog(audit_log) if audit_log else None,
    )
    controllers = Controllers(cluster)
    controllers.attach()
    workloads = WorkloadControllers(cluster)
    workloads.attach()
    auth_controllers = AuthControllers(cluster, signer, ca_cert)
    auth_controllers.attach()
    server = APIServer(
        cluster,
        controllers,
        security,
        bookmark_interval=bookmark_interval,
        max_watch_seconds=max_watch_seconds,
    )
    app = server.make_app()
    app[CLUSTER_KEY] = cluster
    app[CONTROLLERS_KEY] = controllers
    app[WORKLOADS_KEY] = workloads
    app[SERVER_KEY] = server
    app[SECURITY_KEY] = security

    async def start_workloads(app: web.Application) -> None:
        workloads.start()
        auth_controllers.start()
        if security.audit_log is not None:
            security.audit_log.open()

    async def stop_workloads(app: web.Application) -> None:
        await workloads.stop()
        await auth_controllers.stop()
        if security.audit_log is not None:
            security.audit_log.close()

    app.on_startup.append(start_workloads)
    app.on_cleanup.append(stop_workloads)
    return app


CLUSTER_KEY = web.AppKey("devcluster.cluster", Cluster)
CONTROLLERS_KEY = web.AppKey("devcluster.controllers", Controllers)
WORKLOADS_KEY = web.AppKey("devcluster.workloads", WorkloadControllers)
SERVER_KEY = web.AppKey("devcluster.apiserver", APIServer)
SECURITY_KEY = web.AppKey("devcluster.security", Security)


class ServerThread:
    """An API server on its own event loop in a daemon thread.

    `with ServerThread(state_dir) as server: ... server.url ...`
    """

    def __init__(self, state_dir: Path | None = None, host: str = "127.0.0.1", **options: Any):
        self.state_dir = state_dir
        self.host = host
        self.options = options
        self.url = ""
        self.app: web.Application | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def cluster(self) -> Cluster:
        assert self.app is not None
        return self.app[CLUSTER_KEY]

    @property
    def security(self) -> Security:
        assert self.app is not None
        return self.app[SECURITY_KEY]

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop and return its result (thread-safe access)."""
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def start(self) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name="devcluster-apiserver", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError("the API server did not start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.app = create_app(self.state_dir, **self.options)
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start `app` on host:port; returns the runner (call `cleanup()`) and the URL."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    actual = runner.addresses[0][1]
    return runner, f"http://{host}:{actual}"
