"""devcluster as a whole: the API server, the kubelet and the service proxy in one loop.

`DevCluster` is what `elasticlm local up` and the integration tests start. It writes a
kubeconfig so that kubectl, the kubernetes client and kopf reach the API server like
any cluster, as the unrestricted `kubernetes-admin` user (a bearer token).

The API server listens twice on the loopback address: plain HTTP at `url` and, when
`openssl` is available to make the cluster's CA (`devcluster.auth.pki`), HTTPS at
`https_url` with a certificate for 127.0.0.1 and the `kubernetes.default.svc` names.
The kubeconfig names the HTTPS endpoint and its CA (kubectl sends bearer tokens over
HTTPS only); pods reach it through `KUBERNETES_SERVICE_HOST` and `_PORT`, with the CA in
their service-account volume, as in-cluster clients expect. The HTTP endpoint serves
the kubelet, the service proxy and local tools that send no credentials (devcluster's
default treats those as the admin: see `devcluster.auth.authn`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from devcluster import DEFAULT_KUBERNETES_VERSION
from devcluster.apiserver.app import create_app
from devcluster.auth.pki import Pki, ensure_pki
from devcluster.kubelet.node import Kubelet
from devcluster.proxy import ServiceProxy
from devcluster.scheduling import DEFAULT_NODE_CPU, DEFAULT_NODE_MEMORY

log = logging.getLogger(__name__)


def kubeconfig(
    server_url: str,
    namespace: str = "default",
    token: str | None = None,
    ca_cert: bytes | None = None,
) -> dict[str, Any]:
    """A kubeconfig for the API server, as the admin user when `token` is given (kubectl
    sends tokens over HTTPS only), trusting the cluster CA `ca_cert` (PEM)."""
    cluster: dict[str, Any] = {"server": server_url}
    if ca_cert is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_cert).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": cluster}],
        "users": [{"name": "devcluster", "user": {"token": token} if token else {}}],
        "contexts": [
            {
                "name": "devcluster",
                "context": {"cluster": "devcluster", "user": "devcluster", "namespace": namespace},
            }
        ],
        "current-context": "devcluster",
        "preferences": {},
    }


@dataclass
class DevCluster:
    """An embedded Kubernetes stand-in rooted at `state_dir`."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    simulate: bool = False
    persist: bool = False
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    #: Audit log file (JSON lines; "-" for standard output); none by default.
    audit_log: Path | str | None = None
    #: Who requests without credentials are: "admin" or "anonymous" (under RBAC).
    anonymous: str = "admin"
    #: Serve HTTPS too (needs openssl for the cluster's CA).
    tls: bool = True
    #: Private mount namespaces for containers (None: when the machine allows).
    mount_namespaces: bool | None = None
    #: What the node offers to pods' requests (quantities); pods that do not fit wait.
    node_cpu: str = DEFAULT_NODE_CPU
    node_memory: str = DEFAULT_NODE_MEMORY
    url: str = field(init=False, default="")
    https_url: str = field(init=False, default="")
    admin_token: str = field(init=False, default="")
    pki: Pki | None = field(init=False, default=None)
    #: Set once everything serves and the kubeconfig and info file are written.
    ready: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _runner: web.AppRunner | None = field(init=False, default=None)
    _kubelet: Kubelet | None = field(init=False, default=None)
    _proxy: ServiceProxy | None = field(init=False, default=None)

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def info_path(self) -> Path:
        """Written once the cluster serves: its URL, kubeconfig and process id."""
        return self.state_dir / "devcluster.json"

    def _admin_token(self) -> str:
        """The admin's token; kept in the state directory of a persistent cluster, so
        that a kubeconfig written before a restart keeps working."""
        path = self.state_dir / "pki" / "admin.token"
        if self.persist and path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        if self.persist:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token)
        return token

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = self._admin_token()
        if self.tls:
            self.pki = await asyncio.to_thread(ensure_pki, self.state_dir / "pki")
        app = create_app(
            self.state_dir,
            persist=self.persist,
            kubernetes_version=self.kubernetes_version,
            simulate=self.simulate,
            admin_token=self.admin_token,
            anonymous=self.anonymous,
            audit_log=self.audit_log,
            ca_cert=self.pki.ca_cert if self.pki is not None else None,
            node_cpu=self.node_cpu,
            node_memory=self.node_memory,
        )
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self._runner.addresses[0][1]  # the real port when asked for port 0
        self.url = f"http://{self.host}:{port}"
        if self.pki is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.pki.cert_file, self.pki.key_file)
            secure = web.TCPSite(self._runner, self.host, 0, ssl_context=context)
            await secure.start()
            self.https_url = f"https://{self.host}:{self._runner.addresses[-1][1]}"

        self._kubelet = Kubelet(
            self.url,
            self.state_dir,
            simulate=self.simulate,
            token=self.admin_token,
            service_url=self.https_url or self.url,
            mount_namespaces=self.mount_namespaces,
        )
        await self._kubelet.start()
        if not self.simulate:
            self._proxy = ServiceProxy(self.url, token=self.admin_token)
            await self._proxy.start()

        if self.pki is not None:
            config = kubeconfig(self.https_url, token=self.admin_token, ca_cert=self.pki.ca_cert)
        else:
            config = kubeconfig(self.url, token=self.admin_token)
        fd = os.open(self.kubeconfig_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig_path.chmod(0o600)  # it holds the admin's token
        info = {
            "url": self.url,
            "https_url": self.https_url,
            "ca_file": str(self.pki.ca_file) if self.pki is not None else "",
            "kubeconfig": str(self.kubeconfig_path),
            "pid": os.getpid(),
        }
        self.info_path.write_text(json.dumps(info))
        self.ready.set()
        log.info("devcluster serving at %s (state in %s)", self.url, self.state_dir)

    async def stop(self) -> None:
        """Stop the pods' processes first, then the proxy and the API server."""
        if self._kubelet is not None:
            await self._kubelet.stop()
        if self._proxy is not None:
            await self._proxy.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.info_path.unlink()

    async def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM (`elasticlm local down`), then stop cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
