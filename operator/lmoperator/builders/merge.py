"""Strategic-merge-patch of a pod template onto a generated pod, without an API server.

Only what `spec.worker.podTemplate` needs: maps merge recursively, `null` deletes a
key, lists of pod and container fields merge item by item on their Kubernetes merge
keys (containers by name, volumeMounts by mountPath, ...), other lists are replaced,
and an item `{"$patch": "delete", <key>: ...}` removes the item with that key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# Merge keys of the lists of a PodSpec and of a Container (as in the Kubernetes types).
POD_SPEC_LIST_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
}
CONTAINER_LIST_KEYS = {
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "resizePolicy": "resourceName",
}


def _merge_list(
    target: list[Any], patch: list[Any], key: str, item_keys: Mapping[str, str]
) -> list[Any]:
    merged = [copy.deepcopy(item) for item in target]
    for item in patch:
        if not isinstance(item, Mapping) or key not in item:
            merged.append(copy.deepcopy(item))
            continue
        position = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, Mapping) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del merged[position]
            continue
        if position is None:
            merged.append(merge_map({}, item, item_keys))
        else:
            merged[position] = merge_map(merged[position], item, item_keys)
    return merged


def merge_map(
    target: Mapping[str, Any], patch: Mapping[str, Any], list_keys: Mapping[str, str]
) -> dict[str, Any]:
    """`patch` merged onto a copy of `target`; `list_keys` names the merge key of each list."""
    result = copy.deepcopy(dict(target))
    for name, value in patch.items():
        if name == "$patch":
            continue
        if value is None:
            result.pop(name, None)
        elif isinstance(value, Mapping) and isinstance(result.get(name), Mapping):
            result[name] = merge_map(result[name], value, {})
        elif isinstance(value, list) and isinstance(result.get(name), list) and name in list_keys:
            item_keys = CONTAINER_LIST_KEYS if name in ("containers", "initContainers") else {}
            result[name] = _merge_list(result[name], value, list_keys[name], item_keys)
        else:
            result[name] = (
                copy.deepcopy(value) if not isinstance(value, Mapping) else merge_map({}, value, {})
            )
    return result


def merge_pod(pod: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """A pod manifest with a pod template ({metadata, spec}) strategically merged in."""
    result = copy.deepcopy(dict(pod))
    meta = template.get("metadata")
    if isinstance(meta, Mapping):
        result["metadata"] = merge_map(result.get("metadata", {}), meta, {})
    spec = template.get("spec")
    if isinstance(spec, Mapping):
        result["spec"] = merge_map(result.get("spec", {}), spec, POD_SPEC_LIST_KEYS)
    return result
