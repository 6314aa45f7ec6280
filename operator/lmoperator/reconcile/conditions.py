"""metav1.Condition lists: set a condition, keeping lastTransitionTime unless status flips."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any


def rfc3339(moment: datetime) -> str:
    """A Kubernetes timestamp: UTC, whole seconds, 'Z'."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Conditions:
    """A job's conditions, changed in place during one pass."""

    def __init__(self, existing: Iterable[Any] | None, now: datetime, generation: int) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        for item in existing or []:
            if isinstance(item, Mapping) and isinstance(item.get("type"), str):
                self._items[item["type"]] = dict(item)
        self._now = rfc3339(now)
        self._generation = generation

    def get(self, type_: str) -> Mapping[str, Any] | None:
        return self._items.get(type_)

    def is_true(self, type_: str) -> bool:
        item = self._items.get(type_)
        return item is not None and item.get("status") == "True"

    def reason(self, type_: str) -> str | None:
        item = self._items.get(type_)
        return str(item["reason"]) if item is not None and "reason" in item else None

    def set(self, type_: str, status: bool, reason: str, message: str = "") -> bool:
        """Set a condition; True when its status changed (or it is new)."""
        type_ = str(type_)  # a StrEnum member becomes its plain value
        wire = "True" if status else "False"
        old = self._items.get(type_)
        flipped = old is None or old.get("status") != wire
        since = self._now if old is None or flipped else old.get("lastTransitionTime", self._now)
        self._items[type_] = {
            "type": type_,
            "status": wire,
            "observedGeneration": self._generation,
            "lastTransitionTime": since,
            "reason": reason,
            "message": message,
        }
        return flipped

    def clear(self, type_: str, reason: str, message: str = "") -> bool:
        """Set a condition False only if it exists (absent conditions stay absent)."""
        if type_ in self._items:
            return self.set(type_, False, reason, message)
        return False

    def to_list(self) -> list[dict[str, Any]]:
        return list(self._items.values())
