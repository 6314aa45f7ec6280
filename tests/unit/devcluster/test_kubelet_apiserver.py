"""The kubelet and the service proxy against the real devcluster API server."""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devcluster.apiserver.app import create_app
from devcluster.kubelet.node import Kubelet
from devcluster.proxy import ServiceProxy
from tests.waiting import wait_for_async

JSON = dict[str, Any]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc")


def py(code: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(code)]


class Cluster:
    def __init__(self, url: str, session: aiohttp.ClientSession, proxy: ServiceProxy) -> None:
        self.url = url
        self.session = session
        self.proxy = proxy

    async def call(self, method: str, path: str, body: JSON | None = None, **params: str) -> Any:
        async with self.session.request(method, self.url + path, json=body, params=params) as resp:
            text = await resp.text()
            assert resp.status < 400, f"{method} {path}: {resp.status} {text}"
            return await resp.json() if resp.content_type == "application/json" else text

    async def get_pod(self, name: str) -> JSON | None:
        async with self.session.get(f"{self.url}/api/v1/namespaces/default/pods/{name}") as r:
            if r.status == 404:
                return None
            return dict(await r.json())

    async def create_pod(self, name: str, spec: JSON, labels: JSON | None = None) -> None:
        await self.call(
            "POST",
            "/api/v1/namespaces/default/pods",
            {"metadata": {"name": name, "labels": labels or {}}, "spec": spec},
        )

    async def wait_pod(self, name: str, check: Callable[[JSON], bool], timeout: float = 15) -> JSON:
        pod: JSON | None = None

        async def matches() -> JSON | None:
            nonlocal pod
            pod = await self.get_pod(name)
            return pod if pod is not None and check(pod) else None

        return await wait_for_async(
            matches, timeout, lambda: f"pod {name}: {pod and pod.get('status')}"
        )


def ready(pod: JSON) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def phase(p: str) -> Callable[[JSON], bool]:
    return lambda pod: (pod.get("status") or {}).get("phase") == p


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    state = tmp_path / "state"
    state.mkdir()
    app = create_app(state)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    kubelet = Kubelet(url, state, backoff_base=0.2, backoff_max=2.0, stop_timeout=2.0)
    proxy = ServiceProxy(url)
    await kubelet.start()
    await proxy.start()
    session = aiohttp.ClientSession()
    try:
        yield Cluster(url, session, proxy)
    finally:
        await session.close()
        await kubelet.stop()
        await proxy.stop()
        await runner.cleanup()


HTTP_SERVER = """
    import http.server, os, time
    time.sleep(0.3)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["POD_NAME"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.HTTPServer((os.environ["POD_IP"], 8000), H).serve_forever()
"""


async def test_http_pod_ready_and_reachable_through_service_ip(cluster: Cluster) -> None:
    await cluster.call(
        "POST",
        "/api/v1/namespaces/default/services",
        {
            "metadata": {"name": "hello"},
            "spec": {
                "selector": {"app": "hello"},
                "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
            },
        },
    )
    container = {
        "name": "server",
        "image": "python:3.11",
        "command": py(HTTP_SERVER),
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [{"name": "web", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "web"}, "periodSeconds": 1},
    }
    await cluster.create_pod("hello-1", {"containers": [container]}, {"app": "hello"})
    pod = await cluster.wait_pod("hello-1", ready)
    assert pod["spec"]["nodeName"] == "devcluster"
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["podIP"].startswith("127.10.")
    svc = await cluster.call("GET", "/api/v1/namespaces/default/services/hello")
    cluster_ip = svc["spec"]["clusterIP"]
    assert cluster_ip.startswith("127.")

    async def through_service() -> str:
        try:
            async with cluster.session.get(
                f"http://{cluster_ip}/", timeout=aiohttp.ClientTimeout(total=2)
            ) as r:
                return await r.text()
        except (aiohttp.ClientError, OSError):
            return ""

    answer = ""

    async def answered() -> bool:
        nonlocal answer
        answer = await through_service()
        return answer == "hello-1"

    await wait_for_async(
        answered, 10, lambda: f"the service to answer hello-1; it answered {answer!r}"
    )


async def test_missing_command_shows_in_status_and_logs(cluster: Cluster) -> None:
    await cluster.create_pod(
        "broken",
        {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "x", "command": ["definitely-not-a-cmd"]}],
        },
    )
    pod = await cluster.wait_pod("broken", phase("Failed"))
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "StartError"
    assert "definitely-not-a-cmd" in term["message"]
    logs = await cluster.call("GET", "/api/v1/namespaces/default/pods/broken/log")
    assert "executable file not found" in logs


async def test_on_failure_backoff_and_restart_count(cluster: Cluster) -> None:
    await cluster.create_pod(
        "crasher",
        {
            "restartPolicy": "OnFailure",
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11",
                    "command": py("import sys; print('boom'); sys.exit(2)"),
                }
            ],
        },
    )
    seen: list[tuple[float, int]] = []

    def count(pod: JSON) -> bool:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses:
            n = statuses[0]["restartCount"]
            if not seen or seen[-1][1] != n:
                seen.append((time.monotonic(), n))
            return bool(n >= 3)
        return False

    pod = await cluster.wait_pod("crasher", count, timeout=20)
    cs = pod["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert pod["status"]["phase"] == "Running"
    # restarts 2 and 3 waited 0.2 s and 0.4 s of back-off
    times = {n: t for t, n in seen}
    assert times[3] - times[2] >= 0.35
    previous = await cluster.call(
        "GET", "/api/v1/namespaces/default/pods/crasher/log", previous="true"
    )
    assert "boom" in previous


async def test_delete_sends_sigterm_then_sigkill(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = """
        import os, signal, sys, time
        def on_term(signum, frame):
            open(os.path.join(sys.argv[1], "term"), "w").write("x")
        signal.signal(signal.SIGTERM, on_term)
        open(os.path.join(sys.argv[1], "pid"), "w").write(str(os.getpid()))
        while True:
            time.sleep(0.05)
    """
    await cluster.create_pod(
        "sleepy",
        {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11",
                    "command": [*py(code), "/out"],
                    "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                }
            ],
            "volumes": [{"name": "out", "hostPath": {"path": str(out)}}],
        },
    )
    await cluster.wait_pod("sleepy", phase("Running"))
    await wait_for_async(lambda: (out / "pid").exists() and (out / "pid").read_text())
    pid = int((out / "pid").read_text())
    t0 = time.monotonic()
    await cluster.call("DELETE", "/api/v1/namespaces/default/pods/sleepy")

    async def deleted() -> bool:
        return await cluster.get_pod("sleepy") is None

    await wait_for_async(deleted, 15, "the pod to be deleted")
    assert time.monotonic() - t0 >= 1.0
    assert (out / "term").exists()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
