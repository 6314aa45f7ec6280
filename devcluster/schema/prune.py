"""Nulls, pruning and defaults: what the API server does to a custom resource before
it validates it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from devcluster.schema.common import (
    ROOT_FIELDS,
    Schema,
    child_schema,
    declared_types,
    items_of,
    join_path,
    preserves_unknown,
    properties_of,
)


def drop_nulls(schema: Schema, obj: Any) -> Any:
    """A copy of `obj` without the `null` values of non-nullable fields.

    Kubernetes does this before defaulting, so a `null` field with a default gets the
    default; nulls inside arrays stay (they cannot be dropped) and fail validation.
    Fields the schema does not describe are left to `prune`.
    """
    return _drop_nulls(schema, copy.deepcopy(obj), root=True)


def _drop_nulls(node: Schema | None, value: Any, *, root: bool = False) -> Any:
    if node is None:
        return value
    if isinstance(value, dict):
        for key in list(value):
            if root and key == "metadata":
                continue
            child = child_schema(node, key)
            if child is None:
                continue
            if value[key] is None and not child.get("nullable") and "default" not in child:
                del value[key]
            else:
                _drop_nulls(child, value[key])
    elif isinstance(value, list):
        for item in value:
            _drop_nulls(items_of(node), item)
    return value


def prune(schema: Schema, obj: Any) -> tuple[Any, list[str]]:
    """A copy of `obj` without the fields the schema does not specify, and their paths.

    Fields survive under `x-kubernetes-preserve-unknown-fields: true` and
    `additionalProperties`; `apiVersion`, `kind` and `metadata` survive at the root and
    in `x-kubernetes-embedded-resource` objects (the server handles metadata).
    """
    removed: list[str] = []
    pruned = prune_node(schema, copy.deepcopy(obj), "", removed, root=True)
    return pruned, removed


def prune_node(
    node: Schema | None, value: Any, path: str, removed: list[str], *, root: bool
) -> Any:
    if node is None:
        return value
    if isinstance(value, dict):
        properties = properties_of(node)
        extra = node.get("additionalProperties")
        keep_meta = root or node.get("x-kubernetes-embedded-resource") is True
        for key in list(value):
            child_path = join_path(path, key)
            if keep_meta and key in ROOT_FIELDS and (root or key not in properties):
                continue
            if key in properties:
                value[key] = prune_node(
                    properties[key], value[key], child_path, removed, root=False
                )
            elif isinstance(extra, Mapping):
                value[key] = prune_node(extra, value[key], child_path, removed, root=False)
            elif extra is True or preserves_unknown(node):
                continue
            else:
                del value[key]
                removed.append(child_path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            prune_node(items_of(node), item, f"{path}[{index}]", removed, root=False)
    return value


def apply_defaults(schema: Schema, obj: Any) -> Any:
    """A copy of `obj` with the schema's defaults applied, as structural defaulting does.

    Every missing (or non-nullable `null`) property with a `default` gets a deep copy of
    it, which is then defaulted itself; defaulting recurses into every property that
    exists, array items and additionalProperties values, but not into root metadata.
    """
    return _default(schema, copy.deepcopy(obj), root=True)


def _default(node: Schema | None, value: Any, *, root: bool = False) -> Any:
    if node is None:
        return value
    if isinstance(value, dict):
        for key, child in properties_of(node).items():
            if root and key in ROOT_FIELDS:
                continue
            if "default" in child and (
                key not in value or (value[key] is None and not child.get("nullable"))
            ):
                value[key] = copy.deepcopy(child["default"])
        for key, item in value.items():
            if root and key == "metadata":
                continue
            _default(child_schema(node, key), item)
    elif isinstance(value, list):
        items = items_of(node)
        for index, item in enumerate(value):
            if (
                item is None
                and items is not None
                and "default" in items
                and not items.get("nullable")
            ):
                value[index] = copy.deepcopy(items["default"])
            _default(items, value[index])
    return value


def normalize_integers(node: Schema | None, value: Any) -> Any:
    """Integral floats at integer nodes become ints (2.0 is stored and served as 2)."""
    if node is None:
        return value
    if isinstance(value, float) and "integer" in declared_types(node) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalize_integers(child_schema(node, k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_integers(items_of(node), item) for item in value]
    return value
