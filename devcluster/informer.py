"""A minimal Kubernetes REST client and list-watch loop for the kubelet and the proxy.

Plain JSON over aiohttp; no kubernetes client library. `Informer` keeps a cache of one
resource (list, then watch from the list's resourceVersion), delivers ADDED, MODIFIED
and DELETED to a callback, and survives anything the API server does:

- a watch that ends at its `timeoutSeconds` resumes from the last resourceVersion
  seen (bookmarks included); one the server closes early relists (the server may have
  restarted with other resource versions);
- 410 Gone (as an HTTP status or a watch ERROR event) relists;
- any other error (connection refused or reset, API server restarted, bad data) backs
  off (0.2 s doubling to 5 s) and relists. A relist diffs the new list against the
  cache, so objects that vanished meanwhile are delivered as DELETED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

JSON = dict[str, Any]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A non-2xx answer of the API server (status code, Status reason and message)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        message = body.get("message", "") if isinstance(body, dict) else str(body)[:200]
        self.reason = str(reason)
        super().__init__(f"{status} {reason}: {message}".strip())


class RestClient:
    """JSON requests against an API server base URL (`http://host:port`)."""

    def __init__(self, api_url: str, session: aiohttp.ClientSession) -> None:
        self.api_url = api_url.rstrip("/")
        self.session = session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        async with self.session.request(
            method,
            self.api_url + path,
            params=dict(params or {}),
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            try:
                payload: Any = json.loads(text) if text else None
            except ValueError:
                payload = text
            if resp.status >= 400:
                raise ApiError(resp.status, payload)
            return payload

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def watch(
        self, path: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[JSON]:
        """The events of a watch request, one JSON object per line, until the server ends it."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        async with self.session.get(
            self.api_url + path,
            params={**params, "watch": "true"},
            headers={"Accept": "application/json"},
            timeout=timeout,
        ) as resp:
            if resp.status >= 400:
                text = await resp.text()
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                raise ApiError(resp.status, payload)
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl].strip(), buf[nl + 1 :]
                    if line:
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)


def object_key(obj: JSON) -> str:
    """The cache key of an object: its uid, or namespace/name when it has none."""
    meta = obj.get("metadata") or {}
    uid = meta.get("uid")
    if uid:
        return str(uid)
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


EventHandler = Callable[[str, JSON], None]


class Informer:
    """List-watch of one resource path (e.g. `/api/v1/pods`) with a local cache.

    `handler(event_type, obj)` runs synchronously on the event loop for every ADDED,
    MODIFIED and DELETED, in order; an exception in it is logged and does not stop the
    informer. `synced` is set after the first successful list.
    """

    def __init__(
        self,
        client: RestClient,
        path: str,
        handler: EventHandler,
        *,
        params: Mapping[str, str] | None = None,
        watch_timeout: int = 300,
        name: str = "",
    ) -> None:
        self.client = client
        self.path = path
        self.handler = handler
        self.params = dict(params or {})
        self.watch_timeout = watch_timeout
        self.name = name or path
        self.cache: dict[str, JSON] = {}
        self.synced = asyncio.Event()
        self.resource_version: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"informer {self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _emit(self, event: str, obj: JSON) -> None:
        try:
            self.handler(event, obj)
        except Exception:
            log.exception("%s: handler failed on %s", self.name, event)

    async def _relist(self) -> None:
        lst = await self.client.get(self.path, self.params)
        if not isinstance(lst, dict):
            raise ApiError(500, f"list answered {type(lst).__name__}")
        items = [i for i in lst.get("items") or [] if isinstance(i, dict)]
        fresh = {object_key(i): i for i in items}
        old = self.cache
        self.cache = fresh
        self.resource_version = str((lst.get("metadata") or {}).get("resourceVersion") or "")
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj)
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", obj)
            elif (before.get("metadata") or {}).get("resourceVersion") != (
                obj.get("metadata") or {}
            ).get("resourceVersion"):
                self._emit("MODIFIED", obj)
        self.synced.set()

    async def run(self) -> None:
        delay = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                params = {
                    **self.params,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(self.watch_timeout),
                }
                if self.resource_version:
                    params["resourceVersion"] = self.resource_version
                loop = asyncio.get_running_loop()
                started = loop.time()
                async for event in self.client.watch(
                    self.path, params, read_timeout=self.watch_timeout + 30
                ):
                    if self._handle_event(event):
                        need_list = True
                        break
                if loop.time() - started < self.watch_timeout * 0.9:
                    # Closed long before its timeout: the server may have restarted with
                    # other resource versions, so resuming could miss events. Relist.
                    need_list = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                else:
                    delay = 0.2
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                need_list = True
                if exc.status == 410:
                    continue
                log.warning("%s: %s; relisting in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                need_list = True
                log.info(
                    "%s: watch failed (%s: %s); relisting in %.1fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _handle_event(self, event: JSON) -> bool:
        """Apply one watch event; True when the informer must relist (410 Gone)."""
        etype = str(event.get("type", ""))
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without an object: {str(event)[:200]}")
        if etype == "ERROR":
            if obj.get("code") == 410:
                return True
            raise ApiError(int(obj.get("code") or 500), obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = str(rv)
        if etype == "BOOKMARK":
            return False
        key = object_key(obj)
        if etype == "DELETED":
            self.cache.pop(key, None)
            self._emit("DELETED", obj)
        elif etype in ("ADDED", "MODIFIED"):
            existed = key in self.cache
            self.cache[key] = obj
            self._emit("MODIFIED" if existed else "ADDED", obj)
        return False
