"""Fetching metrics over HTTP (asyncio): workers' and servers' /metrics, and the
autoscaler's Prometheus queries. Many scrapes run concurrently, each bounded by a
timeout, and never while an object's lock is held. What comes back is parsed by the pure
modules (`worker_metrics`, `server_metrics`, `autoscale.sources`).

Also the one order the operator gives a pod over HTTP: a warm spare's promotion
(`promote_spare`, synchronous: a pass runs in a thread and gives it right after
relabelling the pod)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Sequence

import aiohttp

from lmoperator.autoscale.sources import prometheus
from lmoperator.server_metrics import Readiness, ServerLoad, parse_readiness, parse_server_load
from lmoperator.worker_metrics import WorkerMetrics, parse_worker_metrics
from lmworker.config import METRICS_PORT, PROMOTE_PATH

SCRAPE_TIMEOUT_SECONDS = 1.0
PROMETHEUS_TIMEOUT_SECONDS = 3.0
MAX_SCRAPE_BYTES = 1 << 20


PROMOTE_TIMEOUT_SECONDS = 1.0
# Pod IPs are reached directly, never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def promote_spare(
    pod_ip: str,
    token: bytes,
    index: int,
    expected: int,
    port: int = METRICS_PORT,
    timeout: float = PROMOTE_TIMEOUT_SECONDS,
) -> str | None:
    """Order the spare at `pod_ip` to become the worker of `index`; None when it took
    the order, else why not (the caller retries on a later pass)."""
    request = urllib.request.Request(
        f"http://{pod_ip}:{port}{PROMOTE_PATH}",
        data=json.dumps({"index": index, "expected": expected}).encode(),
        headers={"Authorization": f"Bearer {token.decode()}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            response.read(1024)
        return None
    except urllib.error.HTTPError as exc:
        detail = exc.read(512).decode("utf-8", errors="replace").strip()
        return f"HTTP {exc.code}: {detail}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


class Scraper:
    """One HTTP connection pool for every scrape the operator makes."""

    def __init__(self, port: int = METRICS_PORT, timeout: float = SCRAPE_TIMEOUT_SECONDS):
        self.port = port
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No proxies from the environment: pod IPs are reached directly.
            self._session = aiohttp.ClientSession(timeout=self.timeout, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def worker(self, pod_ip: str) -> WorkerMetrics | None:
        """One worker's metrics, or None when it cannot be reached or answers nonsense."""
        url = f"http://{pod_ip}:{self.port}/metrics"
        try:
            async with self._client().get(url) as response:
                if response.status != 200:
                    return None
                body = await response.content.read(MAX_SCRAPE_BYTES)
            return parse_worker_metrics(body.decode("utf-8", errors="replace"))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None

    async def _text(self, url: str) -> tuple[int, str] | None:
        try:
            async with self._client().get(url) as response:
                body = await response.content.read(MAX_SCRAPE_BYTES)
                return response.status, body.decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def server(self, pod_ip: str, port: int) -> tuple[ServerLoad | None, Readiness | None]:
        """A server pod's load gauges and its /readyz answer (None: unknown)."""
        base = f"http://{pod_ip}:{port}"
        metrics, ready = await asyncio.gather(
            self._text(f"{base}/metrics"), self._text(f"{base}/readyz")
        )
        load: ServerLoad | None = None
        readiness: Readiness | None = None
        try:
            if metrics is not None and metrics[0] == 200:
                load = parse_server_load(metrics[1])
        except ValueError:
            load = None
        try:
            if ready is not None and ready[0] in (200, 503):
                readiness = parse_readiness(ready[1])
        except ValueError:
            readiness = None
        return load, readiness

    async def prometheus_query(
        self, base_url: str, query: str, timeout: float = PROMETHEUS_TIMEOUT_SECONDS
    ) -> prometheus.Answer:
        """An instant query's HTTP status and body (any status: Prometheus explains its
        errors in a JSON body), or status None and why no answer came."""
        url = base_url.rstrip("/") + prometheus.QUERY_PATH
        try:
            async with self._client().get(
                url,
                params={"query": query},
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                body = await response.content.read(MAX_SCRAPE_BYTES)
                return prometheus.Answer(response.status, body.decode("utf-8", errors="replace"))
        except TimeoutError:
            return prometheus.Answer(None, f"no answer from {url} within {timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return prometheus.Answer(None, f"{url}: {exc.__class__.__name__}: {str(exc)[:200]}")

    async def rank0(self, pod_ips: Sequence[str]) -> WorkerMetrics | None:
        """The metrics of the first worker (in the given order) that reports rank 0.

        Rank 0 is nearly always the first pod in index order, so that one is asked
        alone first; the others only when it is not (all at once).
        """
        if not pod_ips:
            return None
        first = await self.worker(pod_ips[0])
        if first is not None and first.rank == 0:
            return first
        rest = await asyncio.gather(*(self.worker(ip) for ip in pod_ips[1:]))
        return next((m for m in rest if m is not None and m.rank == 0), None)
