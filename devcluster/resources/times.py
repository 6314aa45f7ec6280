"""Time fields re-serialized as Kubernetes does (RFC 3339, seconds or microseconds)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from devcluster.resources.types import ResourceType
from devcluster.store import Obj, bad_request, rfc3339, rfc3339_micro

_CONDITIONS = ("status", "conditions", "[]")
_STATE_TIMES = [
    (*prefix, state, kind, key)
    for prefix in (
        ("status", "containerStatuses", "[]"),
        ("status", "initContainerStatuses", "[]"),
        ("status", "ephemeralContainerStatuses", "[]"),
    )
    for state in ("state", "lastState")
    for kind, key in (
        ("running", "startedAt"),
        ("terminated", "startedAt"),
        ("terminated", "finishedAt"),
    )
]
#: The metav1.Time (seconds) and metav1.MicroTime fields of the built-in kinds, which
#: Kubernetes re-serializes in its own format whatever a client sent.
TIME_FIELDS: dict[tuple[str, str], list[tuple[str, ...]]] = {
    ("", "pods"): [
        ("status", "startTime"),
        (*_CONDITIONS, "lastProbeTime"),
        (*_CONDITIONS, "lastTransitionTime"),
        *_STATE_TIMES,
    ],
    ("", "nodes"): [(*_CONDITIONS, "lastHeartbeatTime"), (*_CONDITIONS, "lastTransitionTime")],
    ("", "namespaces"): [(*_CONDITIONS, "lastTransitionTime")],
    ("", "services"): [(*_CONDITIONS, "lastTransitionTime")],
    ("", "persistentvolumeclaims"): [
        (*_CONDITIONS, "lastProbeTime"),
        (*_CONDITIONS, "lastTransitionTime"),
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [(*_CONDITIONS, "lastTransitionTime")],
    ("apps", "deployments"): [
        (*_CONDITIONS, "lastUpdateTime"),
        (*_CONDITIONS, "lastTransitionTime"),
    ],
    ("apps", "replicasets"): [(*_CONDITIONS, "lastTransitionTime")],
    ("", "events"): [("firstTimestamp",), ("lastTimestamp",)],
    ("events.k8s.io", "events"): [("deprecatedFirstTimestamp",), ("deprecatedLastTimestamp",)],
}
MICRO_TIME_FIELDS: dict[tuple[str, str], list[tuple[str, ...]]] = {
    ("", "events"): [("eventTime",), ("series", "lastObservedTime")],
    ("events.k8s.io", "events"): [("eventTime",), ("series", "lastObservedTime")],
    ("coordination.k8s.io", "leases"): [("spec", "acquireTime"), ("spec", "renewTime")],
}
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _format_time(path: str, value: Any, micro: bool) -> Any:
    if value is None:
        return None
    moment = None
    if isinstance(value, str):
        text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise bad_request(f"{path}: parsing time {json.dumps(value)}: not an RFC 3339 time")
    moment = moment.astimezone(UTC)
    return rfc3339_micro(moment) if micro else rfc3339(moment)


def _normalize_path(obj: Any, path: tuple[str, ...], done: str, micro: bool) -> None:
    if not path or not isinstance(obj, dict | list):
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                _normalize_path(item, rest, f"{done}[{i}]", micro)
        return
    if not isinstance(obj, dict) or head not in obj:
        return
    where = f"{done}.{head}" if done else head
    if rest:
        _normalize_path(obj[head], rest, where, micro)
    else:
        obj[head] = _format_time(where, obj[head], micro)


def normalize_times(rt: ResourceType, obj: Obj) -> None:
    """Rewrite the time fields of a built-in kind as Kubernetes serializes them."""
    key = (rt.group, rt.plural)
    for path in TIME_FIELDS.get(key, []):
        _normalize_path(obj, path, "", micro=False)
    for path in MICRO_TIME_FIELDS.get(key, []):
        _normalize_path(obj, path, "", micro=True)
