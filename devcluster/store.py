"""In-memory object storage of the devcluster API server.

Objects are JSON dicts keyed by (group, resource) and (namespace, name); namespace is
"" for cluster-scoped objects. One global counter gives every write its
resourceVersion, as etcd's revision does for Kubernetes. Every write is recorded in a
bounded history of watch events so that a watch can resume from a resourceVersion, and
is fanned out to the live watchers.

The store treats stored dicts as immutable: writers always store a new dict, readers
must copy before changing anything. Everything here runs on one asyncio event loop
(or in one thread), so no locking is needed.

`APIError` (an error that becomes a Kubernetes `Status` response) lives here too, as
the lowest layer every other module of the server shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devcluster import paths

log = logging.getLogger(__name__)

Obj = dict[str, Any]
GroupResource = tuple[str, str]

SNAPSHOT_FORMAT = 1


# --------------------------------------------------------------------------- errors


class APIError(Exception):
    """An error answered as a `Status` object with an HTTP code."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        return status_object(self.code, self.reason, self.message, self.details)


def status_object(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> Obj:
    result: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        result["details"] = details
    return result


def success_status(details: dict[str, Any] | None = None) -> Obj:
    result: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details is not None:
        result["details"] = details
    return result


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


class TooOldResourceVersionError(Exception):
    """A watch asked for a resourceVersion older than the retained history."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


# --------------------------------------------------------------------------- time


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime | None = None) -> str:
    """Kubernetes' metav1.Time: seconds precision, UTC, `Z`."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(moment: datetime | None = None) -> str:
    """Kubernetes' metav1.MicroTime (leases, events.k8s.io eventTime)."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One change: ADDED, MODIFIED or DELETED, with the object before it (if any)."""

    rv: int
    type: str
    gr: GroupResource
    namespace: str
    name: str
    obj: Obj
    old: Obj | None


@dataclass(eq=False)
class Watcher:
    """A live subscription to the changes of one resource (optionally one namespace)."""

    gr: GroupResource
    namespace: str | None
    queue: asyncio.Queue[StoreEvent | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    def wants(self, event: StoreEvent) -> bool:
        return event.gr == self.gr and (self.namespace is None or self.namespace == event.namespace)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


def meta(obj: Obj) -> dict[str, Any]:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def object_key(obj: Obj) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return (str(m.get("namespace") or ""), str(m.get("name") or ""))


# --------------------------------------------------------------------------- store


class Store:
    """The objects, the revision counter, the event history and the watchers."""

    def __init__(
        self,
        *,
        history_size: int = 20000,
        snapshot_path: Path | None = None,
        snapshot_delay: float = 0.3,
    ) -> None:
        self._objects: dict[GroupResource, dict[tuple[str, str], Obj]] = {}
        self._rv = 1
        self._history: deque[StoreEvent] = deque(maxlen=max(1, history_size))
        # Events with rv <= _compacted are no longer available to resume a watch from.
        self._compacted = 1
        self._watchers: set[Watcher] = set()
        self._listeners: list[Callable[[StoreEvent], None]] = []
        self.snapshot_path = snapshot_path
        self.snapshot_delay = snapshot_delay
        self._save_handle: asyncio.TimerHandle | None = None
        self._dirty = False
        self._writer: ThreadPoolExecutor | None = None
        self._pending_write: Future[None] | None = None

    # ---- reading

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def oldest_resumable(self) -> int:
        """The oldest resourceVersion a watch may resume from."""
        return self._compacted

    def get(self, gr: GroupResource, namespace: str, name: str) -> Obj | None:
        return self._objects.get(gr, {}).get((namespace, name))

    def items(self, gr: GroupResource, namespace: str | None = None) -> list[Obj]:
        """Objects of one resource sorted by (namespace, name)."""
        bucket = self._objects.get(gr, {})
        keys = (
            sorted(bucket) if namespace is None else sorted(k for k in bucket if k[0] == namespace)
        )
        return [bucket[k] for k in keys]

    def count(self, gr: GroupResource, namespace: str | None = None) -> int:
        bucket = self._objects.get(gr, {})
        if namespace is None:
            return len(bucket)
        return sum(1 for k in bucket if k[0] == namespace)

    def resources(self) -> list[GroupResource]:
        return [gr for gr, bucket in self._objects.items() if bucket]

    def all_objects(self) -> Iterator[tuple[GroupResource, Obj]]:
        for gr, bucket in list(self._objects.items()):
            for obj in list(bucket.values()):
                yield gr, obj

    # ---- writing

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def put(self, gr: GroupResource, obj: Obj) -> Obj:
        """Store a new or changed object under a new resourceVersion; returns it."""
        namespace, name = object_key(obj)
        bucket = self._objects.setdefault(gr, {})
        old = bucket.get((namespace, name))
        rv = self._next_rv()
        stored = dict(obj)
        stored["metadata"] = dict(obj.get("metadata") or {})
        stored["metadata"]["resourceVersion"] = str(rv)
        bucket[(namespace, name)] = stored
        self._emit(
            StoreEvent(rv, "ADDED" if old is None else "MODIFIED", gr, namespace, name, stored, old)
        )
        return stored

    def remove(
        self, gr: GroupResource, namespace: str, name: str, final: Obj | None = None
    ) -> Obj | None:
        """Delete an object; the DELETED event carries the deletion's resourceVersion and
        `final` (the object's last state, e.g. with its last finalizer removed) if given.
        """
        bucket = self._objects.get(gr, {})
        old = bucket.pop((namespace, name), None)
        if old is None:
            return None
        rv = self._next_rv()
        last = final if final is not None else old
        gone = dict(last)
        gone["metadata"] = dict(last.get("metadata") or {})
        gone["metadata"]["resourceVersion"] = str(rv)
        self._emit(StoreEvent(rv, "DELETED", gr, namespace, name, gone, old))
        return gone

    def _emit(self, event: StoreEvent) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(event)
        for watcher in list(self._watchers):
            if watcher.wants(event) and not watcher.closed:
                watcher.queue.put_nowait(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("store listener failed on %s %s", event.type, event.gr)
        self._schedule_save()

    # ---- watching

    def add_listener(self, listener: Callable[[StoreEvent], None]) -> None:
        """Call `listener` synchronously with every event (the built-in controllers)."""
        self._listeners.append(listener)

    def watch(
        self, gr: GroupResource, namespace: str | None, since: int | None
    ) -> tuple[Watcher, list[StoreEvent]]:
        """Subscribe; with `since`, also return the retained events after it.

        Raises TooOldResourceVersionError when events after `since` were already dropped.
        """
        backlog: list[StoreEvent] = []
        if since is not None:
            if since < self._compacted:
                raise TooOldResourceVersionError(since, self._compacted)
            watcher = Watcher(gr, namespace)
            backlog = [e for e in self._history if e.rv > since and watcher.wants(e)]
        else:
            watcher = Watcher(gr, namespace)
        self._watchers.add(watcher)
        return watcher, backlog

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        watcher.close()

    def close_watchers(self, gr: GroupResource | None = None) -> None:
        """End the watches (of one resource, or all of them): their streams finish."""
        for watcher in list(self._watchers):
            if gr is None or watcher.gr == gr:
                watcher.close()
                self._watchers.discard(watcher)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    # ---- snapshot

    def _schedule_save(self) -> None:
        if self.snapshot_path is None:
            return
        self._dirty = True
        if self._save_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save()
            return
        self._save_handle = loop.call_later(self.snapshot_delay, self._save_soon)

    def _save_soon(self) -> None:
        """Serialize now (a consistent state), write in a thread (off the event loop)."""
        self._save_handle = None
        if self.snapshot_path is None or not self._dirty:
            return
        self._dirty = False
        data = json.dumps(self.snapshot(), separators=(",", ":"))
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._pending_write = self._writer.submit(self._write_logged, data)

    def _write_logged(self, data: str) -> None:
        try:
            self._write(data)
        except Exception:
            log.exception("could not write the snapshot to %s", self.snapshot_path)

    def snapshot(self) -> Obj:
        objects = [
            {"group": gr[0], "resource": gr[1], "object": obj} for gr, obj in self.all_objects()
        ]
        return {"format": SNAPSHOT_FORMAT, "resourceVersion": self._rv, "objects": objects}

    def save(self) -> None:
        """Write the snapshot atomically (temporary file + rename)."""
        if self.snapshot_path is None or not self._dirty:
            return
        self._dirty = False
        self._write(json.dumps(self.snapshot(), separators=(",", ":")))

    def _write(self, data: str) -> None:
        assert self.snapshot_path is not None
        target = self.snapshot_path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".objects-", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def flush(self) -> None:
        """Write any pending change now (and wait for a write in progress)."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        if self._pending_write is not None:
            self._pending_write.result()
            self._pending_write = None
        self.save()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def load(self) -> int:
        """Load the snapshot if there is one; returns the number of objects."""
        if self.snapshot_path is None or not self.snapshot_path.exists():
            return 0
        data = json.loads(self.snapshot_path.read_text(encoding="utf-8"))
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown snapshot format in {self.snapshot_path}")
        count = 0
        for entry in data.get("objects", []):
            obj = entry["object"]
            gr = (str(entry["group"]), str(entry["resource"]))
            self._objects.setdefault(gr, {})[object_key(obj)] = obj
            count += 1
        self._rv = max(int(data.get("resourceVersion", 1)), self._rv)
        # Nothing before the restart can be replayed.
        self._compacted = self._rv
        self._history.clear()
        return count

    def load_objects(self, entries: Iterable[tuple[GroupResource, Obj]]) -> None:
        """Insert objects without events (used at start-up)."""
        for gr, obj in entries:
            self.put(gr, obj)


def snapshot_path_for(state_dir: Path) -> Path:
    return paths.snapshot_file(state_dir)


def deep_copy(obj: Obj) -> Obj:
    return copy.deepcopy(obj)
