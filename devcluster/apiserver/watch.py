"""Watch streams: initial events, history since a resourceVersion, bookmarks,
timeouts, 410 Expired.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from devcluster.apiserver.codec import JSON_TYPE, dumps
from devcluster.apiserver.http import Accept, Handlers, partial_metadata, query_bool, query_int
from devcluster.apiserver.objects import matcher
from devcluster.resources.types import ResourceType
from devcluster.store import Obj, StoreEvent, TooOldResourceVersionError, bad_request, status_object

WATCH_BATCH = 512  # most watch events sent in one write


class WatchHandlers(Handlers):
    """`?watch=true` on a collection or an object."""

    bookmark_interval: float
    max_watch_seconds: float

    async def serve_watch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        name: str | None,
        accept: Accept,
    ) -> web.StreamResponse:
        from devcluster import tables

        q = request.query
        field_selector = q.get("fieldSelector")
        if name is not None:
            by_name = f"metadata.name={name}"
            field_selector = f"{field_selector},{by_name}" if field_selector else by_name
        matches = matcher(rt, q.get("labelSelector"), field_selector)
        rv_text = q.get("resourceVersion")
        since: int | None = None
        if rv_text not in (None, "", "0"):
            try:
                since = int(str(rv_text))
            except ValueError as exc:
                raise bad_request(f"invalid resource version: {rv_text!r}") from exc
        timeout = query_int(q.get("timeoutSeconds"), "timeoutSeconds")
        bookmarks = query_bool(q.get("allowWatchBookmarks"))
        send_initial = query_bool(q.get("sendInitialEvents"))
        store = self.cluster.store
        include = q.get("includeObject", "Metadata")
        headers_sent = False

        def render(obj: Obj) -> Obj:
            nonlocal headers_sent
            if accept.table is not None:
                table = tables.to_table(
                    rt, [obj], {}, include, accept.table, headers=not headers_sent
                )
                headers_sent = True
                return table
            if accept.partial is not None:
                return partial_metadata(obj, accept.partial)
            return obj

        response = web.StreamResponse(status=200)
        response.content_type = JSON_TYPE
        response.enable_chunked_encoding()
        initial: list[Obj] = []
        backlog: list[StoreEvent] = []
        try:
            if since is None or send_initial:
                initial = [rt.present(o) for o in store.items(rt.gr, namespace)]
                watcher, _ = store.watch(rt.gr, namespace, None)
            else:
                watcher, backlog = store.watch(rt.gr, namespace, since)
        except TooOldResourceVersionError as exc:
            await response.prepare(request)
            error = status_object(410, "Expired", str(exc))
            await response.write(dumps({"type": "ERROR", "object": error}) + b"\n")
            await response.write_eof()
            return response
        closed = asyncio.Event()
        self._streams.add(closed)
        try:
            await response.prepare(request)

            def line(kind: str, obj: Obj) -> bytes:
                return dumps({"type": kind, "object": render(obj)}) + b"\n"

            async def send(kind: str, obj: Obj) -> None:
                await response.write(line(kind, obj))

            # One write per batch of events, not per event: under load the per-write
            # cost, not the encoding, is what makes a watch fall behind.
            chunk: list[bytes] = []
            for obj in initial:
                if matches(obj):
                    chunk.append(line("ADDED", obj))
                    if len(chunk) >= WATCH_BATCH:
                        await response.write(b"".join(chunk))
                        chunk.clear()
            if chunk:
                await response.write(b"".join(chunk))
            if send_initial and bookmarks:
                mark = self.bookmark(rt, store.resource_version)
                mark["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
                await response.write(dumps({"type": "BOOKMARK", "object": mark}) + b"\n")
            for past in backlog:
                out = self.filter_event(rt, past, matches)
                if out is not None:
                    await send(*out)
            loop = asyncio.get_running_loop()
            limit = float(timeout) if timeout and timeout > 0 else self.max_watch_seconds
            deadline = loop.time() + limit
            next_bookmark = loop.time() + self.bookmark_interval
            transport = request.transport
            while not closed.is_set():
                current = loop.time()
                if current >= deadline:
                    break
                if bookmarks and current >= next_bookmark:
                    mark = self.bookmark(rt, store.resource_version)
                    await response.write(dumps({"type": "BOOKMARK", "object": mark}) + b"\n")
                    next_bookmark = current + self.bookmark_interval
                if transport is None or transport.is_closing():
                    break
                wait = min(deadline, next_bookmark if bookmarks else deadline, current + 1.0)
                if watcher.queue.empty():
                    try:
                        event = await asyncio.wait_for(
                            watcher.queue.get(), max(0.01, wait - current)
                        )
                    except TimeoutError:
                        continue
                else:
                    event = watcher.queue.get_nowait()
                batch = [event]
                while len(batch) < WATCH_BATCH and not watcher.queue.empty():
                    batch.append(watcher.queue.get_nowait())
                lines = []
                for item in batch:
                    if item is None:
                        break
                    out = self.filter_event(rt, item, matches)
                    if out is not None:
                        lines.append(line(*out))
                if lines:
                    await response.write(b"".join(lines))
                if None in batch:
                    break
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            store.unwatch(watcher)
            self._streams.discard(closed)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    @staticmethod
    def bookmark(rt: ResourceType, rv: int) -> Obj:
        return {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(rv)},
        }

    @staticmethod
    def filter_event(
        rt: ResourceType, event: StoreEvent, matches: Callable[[Obj], bool]
    ) -> tuple[str, Obj] | None:
        obj = rt.present(event.obj)
        if event.type == "ADDED":
            return ("ADDED", obj) if matches(obj) else None
        if event.type == "DELETED":
            return ("DELETED", obj) if matches(rt.present(event.old or event.obj)) else None
        new_match = matches(obj)
        old_match = event.old is not None and matches(rt.present(event.old))
        if new_match and old_match:
            return ("MODIFIED", obj)
        if new_match:
            return ("ADDED", obj)
        if old_match:
            return ("DELETED", obj)
        return None
