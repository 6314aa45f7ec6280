"""The status writer: how the kubelet's pod statuses and deletions reach the API server.

A pod marks itself dirty when its status may have changed; `BatchQueue` collects the
dirty pods (each once), and `send_status` renders the pod's status and sends it when it
differs from the last one written: a JSON merge patch of the status subresource, with a
uid precondition, fields no longer reported set to null. Deletions go through a
`BatchQueue` of their own. Thousands of pods need no task per pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp

from devcluster.informer import ApiError, RestClient
from devcluster.podspec.common import JSON

if TYPE_CHECKING:
    from devcluster.kubelet.base import PodBase

log = logging.getLogger(__name__)


class BatchQueue:
    """Keys to process (deduplicated), handled concurrently in batches with retries.

    `work(key)` returns True when done, False to retry the key after a back-off.
    """

    def __init__(self, name: str, work: Callable[[str], Awaitable[bool]], concurrency: int) -> None:
        self.name = name
        self.work = work
        self.concurrency = concurrency
        self.pending: set[str] = set()
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.delay = 0.0

    def add(self, key: str) -> None:
        self.pending.add(key)
        self.idle.clear()
        self.wakeup.set()

    async def run(self) -> None:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(key: str) -> bool:
            async with sem:
                try:
                    return await self.work(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: %s failed", self.name, key)
                    return False

        while True:
            if not self.pending:
                self.idle.set()
                await self.wakeup.wait()
            self.wakeup.clear()
            await asyncio.sleep(0.01)  # coalesce bursts
            batch, self.pending = self.pending, set()
            keys = sorted(batch)
            results = await asyncio.gather(*(one(k) for k in keys))
            failed = [k for k, ok in zip(keys, results, strict=True) if not ok]
            if failed:
                self.pending.update(failed)
                self.delay = min(5.0, max(0.2, self.delay * 2))
                await asyncio.sleep(self.delay)
            else:
                self.delay = 0.0


async def send_status(client: RestClient, pod: PodBase) -> bool:
    """Send the pod's status if it changed since the last write; False to retry."""
    status = pod.render_status()
    if status == pod.last_written:
        return True
    patch_status: JSON = dict(status)
    for key in pod.last_written or {}:
        if key not in status:
            patch_status[key] = None
    body = {"metadata": {"uid": pod.uid}, "status": patch_status}
    try:
        await client.request(
            "PATCH",
            pod.api_path + "/status",
            body=body,
            content_type="application/merge-patch+json",
        )
    except ApiError as exc:
        if exc.status in (404, 409):
            # Gone, or a new pod of the same name (the uid precondition failed): the
            # DELETED event of this one follows.
            return True
        if 400 <= exc.status < 500 and exc.status != 429:
            log.warning("status of %s/%s rejected: %s", pod.namespace, pod.name, exc)
            pod.last_written = status  # retrying the same patch would fail the same way
            return True
        return False
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.debug("status of %s/%s not written: %s", pod.namespace, pod.name, exc)
        return False
    pod.last_written = status
    return True
