"""What every part of the pod-spec helpers shares: the JSON type, the runtime name,
the configuration error, metav1.Time, the containers of a pod."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]

#: The name the kubelet puts on its container IDs (`<runtime>://<id>`).
RUNTIME = "devcluster"


class ConfigError(Exception):
    """A container cannot be configured yet (CreateContainerConfigError in Kubernetes).

    The message is shown in the container's waiting state; it never holds a secret value.
    """


# --------------------------------------------------------------------------------------
# Time


def rfc3339(t: float) -> str:
    """A metav1.Time: RFC 3339 in UTC with second precision, as the API serves it."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    """The POSIX time of a metav1.Time (or MicroTime) string; None when absent or bad."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iter_containers(pod: JSON) -> Iterator[tuple[bool, JSON]]:
    """(is_init, container) for the pod's init containers, then its containers."""
    spec = pod.get("spec") or {}
    for c in spec.get("initContainers") or []:
        yield True, c
    for c in spec.get("containers") or []:
        yield False, c
