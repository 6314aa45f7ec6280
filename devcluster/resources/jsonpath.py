"""The simple JSONPaths of CRDs (scale subresource, printer columns)."""

from __future__ import annotations

import re
from typing import Any

from devcluster.store import Obj


def json_path_get(obj: Any, path: str) -> tuple[bool, Any]:
    """Follow a simple JSONPath (`.a.b`, `.a[0].b`, `{.a.b}`); (found, value)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    tokens = re.findall(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]", path)
    current = obj
    for name, index, quoted in tokens:
        key = name or quoted
        if key:
            if not isinstance(current, dict) or key not in current:
                return False, None
            current = current[key]
        else:
            i = int(index)
            if not isinstance(current, list) or i >= len(current):
                return False, None
            current = current[i]
    return True, current


def json_path_set(obj: Obj, path: str, value: Any) -> None:
    """Set `.a.b` (creating maps on the way)."""
    parts = [p for p in path.strip().lstrip(".").split(".") if p]
    current = obj
    for part in parts[:-1]:
        nxt = current.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            current[part] = nxt
        current = nxt
    current[parts[-1]] = value


def json_path_field(path: str) -> str:
    """`.spec.replicas` -> `spec.replicas` (for error fields)."""
    return path.strip().lstrip(".")
