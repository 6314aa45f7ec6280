"""devcluster API throughput and watch latency, with 2,000 pods in simulate mode.

Creates, lists, watches and deletes pods through the REST API, then prints one JSON
line. Watch latency is measured twice: from each create request to its ADDED event
while `--concurrency` creates are in flight (queueing included), and one create at a
time (`idle_*`). The baseline, measured in the same run with the same client and concurrency, is
a bare aiohttp server (in its own process, like devcluster) that answers every request
with a fixed small JSON body: the HTTP floor of this machine without any API semantics.

    .venv/bin/python bench/devcluster_api.py [--pods 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp

NAMESPACE = "default"
IDLE_PODS = 200

BASELINE_SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    async def answer(request):
        await request.read()
        return web.json_response({"kind": "Status", "status": "Success"}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
    """
)


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_all(count: int, concurrency: int, call: Any) -> float:
    """Run `call(i)` for every i with bounded concurrency; return operations per second."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - start)


async def measure_devcluster(url: str, pods: int, concurrency: int) -> dict[str, float]:
    base = f"{url}/api/v1/namespaces/{NAMESPACE}/pods"
    sent: dict[str, float] = {}
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(base) as response:
            version = (await response.json())["metadata"]["resourceVersion"]
        watch_done = asyncio.Event()

        async def watch() -> None:
            params = {"watch": "1", "resourceVersion": version, "labelSelector": "app=bench"}
            async with session.get(base, params=params, timeout=None) as response:
                async for line in response.content:
                    event = json.loads(line)
                    name = event["object"]["metadata"]["name"]
                    if event["type"] == "ADDED" and name in sent:
                        latencies.append(time.perf_counter() - sent[name])
                        if len(latencies) == pods:
                            watch_done.set()
                            return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)  # let the watch connect before the first create

        async def create(i: int) -> None:
            name = f"bench-{i}"
            sent[name] = time.perf_counter()
            async with session.post(base, json=pod(name)) as response:
                assert response.status == 201, await response.text()

        create_rate = await run_all(pods, concurrency, create)
        await asyncio.wait_for(watch_done.wait(), timeout=120)
        watcher.cancel()

        start = time.perf_counter()
        async with session.get(base, params={"labelSelector": "app=bench"}) as response:
            listed = len((await response.json())["items"])
        list_seconds = time.perf_counter() - start
        assert listed == pods, listed

        async def get(i: int) -> None:
            async with session.get(f"{base}/bench-{i}") as response:
                assert response.status == 200

        get_rate = await run_all(pods, concurrency, get)

        async def delete(i: int) -> None:
            params = {"gracePeriodSeconds": "0"}
            async with session.delete(f"{base}/bench-{i}", params=params) as response:
                assert response.status in (200, 202), await response.text()

        delete_rate = await run_all(pods, concurrency, delete)

        # Watch latency without load: one create at a time.
        idle: list[float] = []
        async with session.get(base) as response:
            version = (await response.json())["metadata"]["resourceVersion"]
        params = {"watch": "1", "resourceVersion": version, "labelSelector": "app=idle"}
        async with session.get(base, params=params, timeout=None) as stream:
            for i in range(IDLE_PODS):
                body = pod(f"idle-{i}")
                body["metadata"]["labels"] = {"app": "idle"}
                start = time.perf_counter()
                async with session.post(base, json=body) as response:
                    assert response.status == 201
                while True:
                    event = json.loads(await stream.content.readline())
                    if event["type"] == "ADDED":
                        idle.append(time.perf_counter() - start)
                        break
    return {
        "create_per_s": round(create_rate, 1),
        "get_per_s": round(get_rate, 1),
        "delete_per_s": round(delete_rate, 1),
        "list_seconds": round(list_seconds, 3),
        "watch_latency_ms_p50": round(1000 * statistics.median(latencies), 2),
        "watch_latency_ms_p99": round(1000 * percentile(latencies, 0.99), 2),
        "idle_watch_latency_ms_p50": round(1000 * statistics.median(idle), 2),
        "idle_watch_latency_ms_p99": round(1000 * percentile(idle, 0.99), 2),
    }


async def measure_baseline(url: str, pods: int, concurrency: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session:

        async def post(i: int) -> None:
            async with session.post(f"{url}/x", json=pod(f"bench-{i}")) as response:
                await response.read()

        return {"post_per_s": round(await run_all(pods, concurrency, post), 1)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "devcluster"
        cluster = subprocess.Popen(
            [sys.executable, "-m", "devcluster", "up", "--simulate", "--state-dir", str(state_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
        )
        try:
            info_file = state_dir / "devcluster.json"
            deadline = time.monotonic() + 60
            while not info_file.exists():
                if cluster.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("devcluster did not start")
                time.sleep(0.05)
            url = json.loads(info_file.read_text())["url"]
            figures = asyncio.run(measure_devcluster(url, args.pods, args.concurrency))
        finally:
            cluster.terminate()
            cluster.wait(timeout=30)

    port = free_port()
    baseline = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER, str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/ready")
        floor = asyncio.run(
            measure_baseline(f"http://127.0.0.1:{port}", args.pods, args.concurrency)
        )
    finally:
        baseline.terminate()
        baseline.wait(timeout=30)

    print(
        json.dumps(
            {
                "bench": "devcluster_api",
                "pods": args.pods,
                "concurrency": args.concurrency,
                "devcluster": figures,
                "baseline_bare_aiohttp": floor,
                "create_vs_baseline": round(figures["create_per_s"] / floor["post_per_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
