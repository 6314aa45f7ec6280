"""What the handlers of every kind share: one pass at a time per object, the children
seen through kopf's indexes, status writes, carrying out a plan, events.

A kind's handler module (e.g. `handlers/trainingjob.py`) reads its owner and children
through these helpers, asks its pure reconciler for a `Plan`, and hands the plan back
here. Nothing in this module knows a kind's spec.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import kopf

from lmoperator.api import kinds
from lmoperator.builders.defaults import NO_DEFAULTS, Defaults
from lmoperator.builders.trainingjob import NO_PEERS, NetworkPeers
from lmoperator.kube import KubeApi, KubeError
from lmoperator.operator_metrics import CHILDREN_CREATED, CHILDREN_DELETED
from lmoperator.reconcile import status as status_rules
from lmoperator.reconcile.children import (
    CreateObject,
    DeleteObject,
    OwnerRef,
    PatchObject,
    Plan,
    controller_of,
    is_controlled_by,
)

# What kopf passes as `logger`.
Logger = logging.Logger | logging.LoggerAdapter[Any]
# The key of the owner and child indexes: (namespace, owner kind, owner name).
OwnerKey = tuple[str, str, str]
# A child created or deleted by a pass is trusted over the index for this long, until
# the watch event that shows it arrives (the "expectations" of Kubernetes controllers).
EXPECTATION_SECONDS = 30.0
# The status a pass wrote is trusted over the watch's copy for this long at most; the
# watch event of the write normally arrives within milliseconds.
WRITTEN_STATUS_SECONDS = 10.0
RETRY_DELAY_SECONDS = 2.0

T = TypeVar("T")

# The cluster admin's pod defaults (flags of `elasticlm operator`), set once at startup.
_POD_DEFAULTS: list[Defaults] = [NO_DEFAULTS]


def set_pod_defaults(defaults: Defaults) -> None:
    _POD_DEFAULTS[0] = defaults


def pod_defaults() -> Defaults:
    """What the kinds' parsers lay under each resource's spec.worker."""
    return _POD_DEFAULTS[0]


# Who may reach a training job's metrics port besides its own pods (flags of `elasticlm
# operator`, set once at startup).
_NETWORK_PEERS: list[NetworkPeers] = [NO_PEERS]


def set_network_peers(peers: NetworkPeers) -> None:
    _NETWORK_PEERS[0] = peers


def network_peers() -> NetworkPeers:
    return _NETWORK_PEERS[0]


# --------------------------------------------------------------------------------------
# Per-object memory


@dataclass
class ObjectState:
    """What the operator remembers of one object between passes (lost on restart,
    which is fine: a pass is level-based and rebuilds it from the cluster)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # A pass was asked for: a child's event that found the lock taken sets it, and the
    # pass holding the lock runs once more.
    dirty: bool = False
    # The status as the operator last wrote it: newer than the watch's copy until the
    # watch event of the write arrives (see `current_status`).
    status: dict[str, Any] | None = None
    status_written_at: float | None = None  # time.monotonic()
    last_progress_write: float | None = None  # time.monotonic()
    # The kind's latest scrape of its workers (the timer refreshes it).
    metrics: Any = None
    # The kind's autoscaler state (windows, last decisions), while autoscaling is on.
    autoscale: Any = None
    # Children this process created or deleted, by (plural, name), until the index shows it.
    created: dict[tuple[str, str], tuple[dict[str, Any], float]] = field(default_factory=dict)
    deleted: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    # Wakes the object's metrics loop early (a pass from another thread sets it).
    wake: Waker | None = None
    # A training job's rendezvous token, read from its Secret when a spare is promoted.
    rdzv_token: bytes | None = None


class Waker:
    """An asyncio.Event that a thread may set: a pass (in a worker thread) tells the
    object's metrics loop (on the event loop) that something changed."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, stopped: Any, timeout: float) -> None:
        """Until set, `stopped` (a kopf DaemonStopped), or `timeout` seconds."""
        woken = asyncio.ensure_future(self._event.wait())
        halted = asyncio.ensure_future(stopped.wait(timeout))
        try:
            await asyncio.wait({woken, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (woken, halted):
                task.cancel()
            self._event.clear()


class ObjectStates:
    """ObjectState by uid; forgotten when the object is deleted."""

    def __init__(self) -> None:
        self._states: dict[str, ObjectState] = {}
        self._guard = threading.Lock()

    def get(self, uid: str) -> ObjectState:
        with self._guard:
            return self._states.setdefault(uid, ObjectState())

    def forget(self, uid: str) -> None:
        with self._guard:
            self._states.pop(uid, None)

    def __len__(self) -> int:
        return len(self._states)


STATES = ObjectStates()

#: Set once the operator is asked to stop (lmoperator.main, with leader election: the
#: Lease is released only after kopf has stopped). kopf may still spawn a daemon for an
#: event it had queued after it stopped the others, and such a daemon would hold the
#: shutdown for kopf's 5 s timeout of hung tasks; the loops look at this flag too.
OPERATOR_STOPPING = threading.Event()


def loop_goes_on(stopped: Any) -> bool:
    """Whether a daemon's loop runs once more: neither it nor the operator is stopping."""
    return not stopped and not OPERATOR_STOPPING.is_set()


def run_exclusive(state: ObjectState, one_pass: Callable[[], T], wait: bool) -> T | None:
    """Run `one_pass` under the object's lock; passes asked for meanwhile coalesce.

    wait=True (create, update, timer): block for the lock and run a pass whose result
    is returned. wait=False (a child's event): when another pass holds the lock, leave a
    note that makes it run once more, and return at once (None).
    """
    result: T | None = None
    state.dirty = True
    if wait:
        with state.lock:
            state.dirty = False
            result = _guarded(state, one_pass)
    while state.dirty:
        if not state.lock.acquire(blocking=False):
            return result  # the holder sees `dirty` after it releases, and runs again
        try:
            if not state.dirty:
                break
            state.dirty = False
            outcome = _guarded(state, one_pass)
            result = outcome if not wait else result
        finally:
            state.lock.release()
    return result


def _guarded(state: ObjectState, one_pass: Callable[[], T]) -> T:
    try:
        return one_pass()
    except BaseException:
        state.dirty = True  # the next caller tries again
        raise


# --------------------------------------------------------------------------------------
# Reading the owner and its children from kopf's indexes


def current_status(state: ObjectState, body: Mapping[str, Any]) -> dict[str, Any]:
    """The owner's status: what this process last wrote while the watch has not shown
    it yet, else the watch's copy (which also covers writes by another operator
    replica that was active meanwhile)."""
    watched = dict(body.get("status") or {})
    written, since = state.status, state.status_written_at
    if written is None or since is None or written == watched:
        state.status = state.status_written_at = None
        return watched
    if time.monotonic() - since > WRITTEN_STATUS_SECONDS:
        state.status = state.status_written_at = None
        return watched
    return dict(written)


def owner_index_entry(
    kind: kinds.ResourceKind, namespace: str | None, name: str, body: Mapping[str, Any]
) -> dict[OwnerKey, dict[str, Any]]:
    """An owner's value in its kind's index: its body at the latest event.

    Not a deep copy: kopf parses each watch event into new dicts and never changes them
    afterwards, and nothing of ours writes into an indexed body. Copying every body of
    every event was a tenth of the operator's CPU at 500 jobs.
    """
    return {(namespace or "", kind.kind, name): dict(body)}


def child_index_entry(
    namespace: str | None, body: Mapping[str, Any]
) -> dict[OwnerKey, dict[str, Any]]:
    """A child's value in the children index, keyed by its controller (none: {})."""
    controller = controller_of(body)
    if controller is None:
        return {}
    api_version, kind, name = controller
    if kinds.kind_of(api_version, kind) is None:
        return {}
    return {(namespace or "", kind, name): dict(body)}  # as owner_index_entry: no deep copy


def latest(index: Mapping[OwnerKey, Iterable[dict[str, Any]]], key: OwnerKey) -> dict[str, Any]:
    """The one value of `key` in an index of owners; {} when it is not there."""
    values = list(index.get(key, ()))
    return values[-1] if values else {}


def latest_children(
    index: Mapping[OwnerKey, Iterable[dict[str, Any]]], key: OwnerKey
) -> list[dict[str, Any]]:
    """Every child indexed under an owner (of any kind that index holds)."""
    return list(index.get(key, ()))


def children_of(
    ref: OwnerRef,
    state: ObjectState,
    kind: kinds.ResourceKind,
    index: Mapping[OwnerKey, Iterable[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The owner's children of `kind`: the index, corrected by this process's own
    recent creations and deletions that the watch has not shown yet."""
    now = time.monotonic()
    seen = {
        str((c.get("metadata") or {}).get("name")): c
        for c in index.get((ref.namespace, ref.kind.kind, ref.name), ())
        if c.get("kind", kind.kind) == kind.kind and is_controlled_by(c, ref.uid)
    }
    for (plural, name), (created, since) in list(state.created.items()):
        if plural != kind.plural:
            continue
        if name in seen or now - since > EXPECTATION_SECONDS:
            del state.created[(plural, name)]
        else:
            seen[name] = created
    for (plural, name), (uid, since) in list(state.deleted.items()):
        if plural != kind.plural:
            continue
        child = seen.get(name)
        child_meta = (child or {}).get("metadata") or {}
        if (
            child is None
            or child_meta.get("uid") != uid
            or child_meta.get("deletionTimestamp")
            or now - since > EXPECTATION_SECONDS
        ):
            del state.deleted[(plural, name)]
        else:
            marked = copy.deepcopy(child)
            marked["metadata"]["deletionTimestamp"] = "deleting"
            seen[name] = marked
    return list(seen.values())


# --------------------------------------------------------------------------------------
# Writing: status, actions, events


def write_status(
    kube: KubeApi,
    ref: OwnerRef,
    state: ObjectState,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    progress_fields: frozenset[str],
) -> bool:
    """Write the status change (progress alone may wait); True when written."""
    patch = status_rules.status_patch(old, new)
    since = (
        None if state.last_progress_write is None else time.monotonic() - state.last_progress_write
    )
    if not status_rules.should_write(patch, progress_fields, since):
        return False
    try:
        written = kube.patch(ref.kind, ref.namespace, ref.name, {"status": patch}, "status")
    except KubeError:
        state.status = None  # not known any more: the next pass reads the watch's copy
        raise
    state.last_progress_write = time.monotonic()
    if written is not None:
        state.status = dict(written.get("status") or {})
        state.status_written_at = state.last_progress_write
    return True


def apply_plan(
    kube: KubeApi, ref: OwnerRef, state: ObjectState, plan: Plan, logger: Logger
) -> None:
    """Carry out the plan's actions, then post its events.

    Every action is tried; the failures are raised together at the end as one
    KubeError, so that the caller retries the pass (all actions are safe to repeat).
    """
    failures: list[str] = []
    notes: list[tuple[str, str, str]] = []
    for action in plan.actions:
        try:
            note = _apply(kube, ref, state, action, logger)
        except KubeError as exc:
            failures.append(str(exc))
            continue
        if note is not None:
            notes.append(note)
    for reason, message, why in notes:
        logger.info(message + (f" reason={why}" if why else ""))
        post_event(kube, ref, reason, message + (f" ({why})" if why else ""), "Normal", logger)
    for event in plan.events:
        post_event(kube, ref, event.reason, event.message, event.type, logger)
    if failures:
        raise KubeError("; ".join(failures), 0, "")


def _apply(
    kube: KubeApi, ref: OwnerRef, state: ObjectState, action: Any, logger: Logger
) -> tuple[str, str, str] | None:
    """One action; the (event reason, message, why) to report, if any."""
    kind = action.kind
    if isinstance(action, CreateObject):
        created = kube.create(kind, ref.namespace, action.manifest)
        if created is None:
            return None
        state.created[(kind.plural, action.name)] = (created, time.monotonic())
        CHILDREN_CREATED.labels(kind.kind, action.role).inc()
        return (f"SuccessfulCreate{kind.kind}", f"Created {kind.singular} {action.name}", "")
    if isinstance(action, PatchObject):
        kube.patch(kind, ref.namespace, action.name, action.patch, action.subresource)
        return (f"SuccessfulPatch{kind.kind}", f"Patched {kind.singular} {action.name}", "")
    if isinstance(action, DeleteObject):
        if kind == ref.kind and action.name == ref.name:
            logger.info(f"Deleting the {kind.singular}: {action.reason}")
            kube.delete(kind, ref.namespace, ref.name)
            return None
        if not kube.delete(kind, ref.namespace, action.name, action.grace_seconds):
            return None
        if action.uid:
            state.deleted[(kind.plural, action.name)] = (action.uid, time.monotonic())
        CHILDREN_DELETED.labels(kind.kind, action.role).inc()
        return (
            f"SuccessfulDelete{kind.kind}",
            f"Deleted {kind.singular} {action.name}",
            action.reason,
        )
    raise TypeError(f"unknown action {action!r}")


def post_event(
    kube: KubeApi, ref: OwnerRef, reason: str, message: str, type_: str, logger: Logger
) -> None:
    try:
        kube.create_event(ref.involved_object(), reason, message, type_)
    except KubeError as exc:  # events are best effort
        logger.debug(f"Could not post event reason={reason}: {exc}")


def kube_of(memo: Any) -> KubeApi:
    kube = getattr(memo, "kube", None)
    if kube is None:
        raise kopf.TemporaryError("the API client is not configured yet", delay=1)
    return cast(KubeApi, kube)


def is_deletion(event: Mapping[str, Any], **_: Any) -> bool:
    """kopf's `when` for the deletion event only: the other events (every status write)
    then never reach the handler at all."""
    return event.get("type") == "DELETED"


def forget_deleted_object(event: Mapping[str, Any], uid: str | None) -> None:
    """The operator's memory of an object goes with the object."""
    if is_deletion(event) and uid:
        STATES.forget(uid)


def refuse_invalid(status: Mapping[str, Any], condition_type: str, reason: str) -> None:
    """Fail the handler (kopf logs it and does not retry) when the pass failed the object
    for an invalid spec: condition `condition_type` with `reason`."""
    if status.get("phase") != "Failed":
        return
    for condition in status.get("conditions") or []:
        if condition.get("type") == condition_type and condition.get("reason") == reason:
            raise kopf.PermanentError(f"The spec is invalid: {condition.get('message')}")
