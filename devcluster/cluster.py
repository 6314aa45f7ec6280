"""devcluster as a whole: the API server, the kubelet and the service proxy in one loop.

`DevCluster` is what `elasticlm local up` and the integration tests start. It writes a
kubeconfig so that kubectl, the kubernetes client and kopf reach the API server like
any cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from devcluster import DEFAULT_KUBERNETES_VERSION
from devcluster.apiserver.app import create_app
from devcluster.kubelet.node import Kubelet
from devcluster.proxy import ServiceProxy

log = logging.getLogger(__name__)


def kubeconfig(server_url: str, namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig for the API server; devcluster has no authentication."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": {"server": server_url}}],
        "users": [{"name": "devcluster", "user": {}}],
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
    url: str = field(init=False, default="")
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

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        app = create_app(
            self.state_dir,
            persist=self.persist,
            kubernetes_version=self.kubernetes_version,
            simulate=self.simulate,
        )
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        port = self._runner.addresses[0][1]  # the real port when asked for port 0
        self.url = f"http://{self.host}:{port}"

        self._kubelet = Kubelet(self.url, self.state_dir, simulate=self.simulate)
        await self._kubelet.start()
        if not self.simulate:
            self._proxy = ServiceProxy(self.url)
            await self._proxy.start()

        self.kubeconfig_path.write_text(yaml.safe_dump(kubeconfig(self.url), sort_keys=False))
        info = {"url": self.url, "kubeconfig": str(self.kubeconfig_path), "pid": os.getpid()}
        self.info_path.write_text(json.dumps(info))
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
