"""The three PATCH flavours of the Kubernetes API, applied to JSON documents.

* `json_merge_patch` — `application/merge-patch+json`, RFC 7386.
* `json_patch` — `application/json-patch+json`, RFC 6902 (what kopf sends, starting with
  a `test` of `/metadata/resourceVersion`).
* `strategic_merge_patch` — `application/strategic-merge-patch+json`, for built-in kinds
  only (k8s.io/apimachinery/pkg/util/strategicpatch).

None of them mutates its inputs. Errors are `PatchError`s carrying the HTTP status the
real API server answers with (`http_status`), so the server can map them directly:

* 400 BadRequest — `MalformedPatchError`: the patch document has the wrong shape (a JSON
  patch that is not an array of objects, a strategic patch that is not an object, an
  unknown `$patch` directive, a list item without its merge key, ...).
* 413 RequestEntityTooLarge — `PatchTooLargeError`: more than 10000 JSON patch operations.
* 422 Invalid — every other `PatchError`, i.e. a well-formed JSON patch that does not
  apply: an unknown `op`, a bad JSON pointer, a missing path, and a failed `test`
  (`PatchTestFailed`). kube-apiserver builds that answer with NewGenericServerResponse
  (422, reason `Invalid`), whose message is always the generic "the server rejected our
  request due to an error in our request" (`JSON_PATCH_FAILURE_MESSAGE`) with no causes:
  the detailed text of our exception is not what Kubernetes shows, but a dev cluster may
  add it. kopf relies on exactly this 422 to retry its resourceVersion-guarded patches.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "JSON_PATCH_FAILURE_MESSAGE",
    "MAX_JSON_PATCH_OPERATIONS",
    "MERGE_KEYS",
    "MalformedPatchError",
    "PatchError",
    "PatchTestFailed",
    "PatchTooLargeError",
    "json_equal",
    "json_merge_patch",
    "json_patch",
    "merge_keys_for",
    "merge_patch_diff",
    "parse_json_pointer",
    "strategic_merge_patch",
    "supports_strategic_merge",
]

MAX_JSON_PATCH_OPERATIONS: Final = 10000
JSON_PATCH_FAILURE_MESSAGE: Final = "the server rejected our request due to an error in our request"


class PatchError(ValueError):
    """A patch that cannot be applied; `http_status` is what Kubernetes answers (422)."""

    http_status: int = 422


class PatchTestFailed(PatchError):  # noqa: N818 (the name other modules import)
    """A JSON patch `test` operation that does not hold (422 Invalid, like any failed op)."""


class MalformedPatchError(PatchError):
    """A patch document of the wrong shape (400 BadRequest)."""

    http_status = 400


class PatchTooLargeError(PatchError):
    """More JSON patch operations than kube-apiserver accepts (413)."""

    http_status = 413


# ---------------------------------------------------------------------------
# JSON values.
# ---------------------------------------------------------------------------


def json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values: 1 == 1.0, but true != 1 (Python's bool is an int)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    return type(left) is type(right) and bool(left == right)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# ---------------------------------------------------------------------------
# JSON merge patch (RFC 7386).
# ---------------------------------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, `null` removes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    # Values taken over from `target` unchanged are still shared: copy them.
    return {key: value if key in patch else copy.deepcopy(value) for key, value in result.items()}


def merge_patch_diff(original: Any, modified: Any) -> Any:
    """A JSON merge patch that turns `original` into `modified` (what `kubectl` computes).

    Exact when `modified` holds no `null` object values (a merge patch cannot set one).
    """
    if not (isinstance(original, Mapping) and isinstance(modified, Mapping)):
        return copy.deepcopy(modified)
    patch: dict[str, Any] = {key: None for key in original if key not in modified}
    for key, value in modified.items():
        if key not in original:
            patch[key] = copy.deepcopy(value)
        elif not json_equal(original[key], value):
            patch[key] = merge_patch_diff(original[key], value)
    return patch


# ---------------------------------------------------------------------------
# JSON patch (RFC 6902) and JSON pointers (RFC 6901).
# ---------------------------------------------------------------------------

_OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")


def parse_json_pointer(pointer: Any) -> list[str]:
    """The reference tokens of a JSON pointer: "" is the whole document, "/a/b~1c" is
    ["a", "b/c"]. Raises PatchError for anything RFC 6901 does not allow.
    """
    if not isinstance(pointer, str):
        raise PatchError(f"a JSON pointer must be a string, got {_type_name(pointer)}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f'invalid JSON pointer "{pointer}": must be "" or start with "/"')
    tokens = []
    for raw in pointer[1:].split("/"):
        position = raw.find("~")
        while position != -1:
            if raw[position + 1 : position + 2] not in ("0", "1"):
                raise PatchError(
                    f'invalid JSON pointer "{pointer}": "~" must be followed by "0" or "1"'
                )
            position = raw.find("~", position + 2)
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tokens


def _pointer(tokens: list[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _array_index(token: str, array: list[Any], where: str, *, insert: bool) -> int:
    """The index `token` names in `array`; `insert` allows len(array) (and "-")."""
    if token == "-" and insert:
        return len(array)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0") or not token.isascii():
        raise PatchError(f'{where}: "{token}" is not an array index')
    index = int(token)
    limit = len(array) if insert else len(array) - 1
    if index > limit:
        raise PatchError(f"{where}: index {index} is out of bounds (array length {len(array)})")
    return index


def _resolve(doc: Any, tokens: list[str], where: str) -> Any:
    """The value at `tokens`; raises PatchError naming the first part that is missing."""
    value = doc
    for depth, token in enumerate(tokens):
        if isinstance(value, dict):
            if token not in value:
                raise PatchError(f"{where}: {_pointer(tokens[: depth + 1])} does not exist")
            value = value[token]
        elif isinstance(value, list):
            value = value[_array_index(token, value, where, insert=False)]
        else:
            raise PatchError(
                f"{where}: {_pointer(tokens[:depth]) or 'the document'} is a "
                f"{_type_name(value)}, not an object or array"
            )
    return value


def _container(doc: Any, tokens: list[str], where: str) -> Any:
    """The object or array that holds the last token of a non-empty pointer."""
    parent = _resolve(doc, tokens[:-1], where)
    if not isinstance(parent, dict | list):
        raise PatchError(
            f"{where}: {_pointer(tokens[:-1]) or 'the document'} is a "
            f"{_type_name(parent)}, not an object or array"
        )
    return parent


def _add(doc: Any, tokens: list[str], value: Any, where: str) -> Any:
    if not tokens:
        return value
    parent = _container(doc, tokens, where)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent.insert(_array_index(tokens[-1], parent, where, insert=True), value)
    return doc


def _remove(doc: Any, tokens: list[str], where: str) -> Any:
    """Removes the value at `tokens` and returns it."""
    if not tokens:
        raise PatchError(f"{where}: cannot remove the whole document")
    parent = _container(doc, tokens, where)
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise PatchError(f"{where}: {_pointer(tokens)} does not exist")
        return parent.pop(tokens[-1])
    return parent.pop(_array_index(tokens[-1], parent, where, insert=False))


def _operand(operation: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in operation:
        raise PatchError(f'{where}: missing "{name}"')
    return operation[name]


def _operation_pointer(pointer: Any, where: str) -> list[str]:
    try:
        return parse_json_pointer(pointer)
    except PatchError as exc:
        raise PatchError(f"{where}: {exc}") from None


def _apply_operation(doc: Any, operation: Mapping[str, Any], index: int) -> Any:
    op = operation.get("op")
    path = operation.get("path")
    where = f"operation {index} ({op} {path})"
    if op not in _OPERATIONS:
        raise PatchError(
            f'operation {index}: unknown op "{op}" (expected add, remove, replace, move, '
            "copy or test)"
        )
    if "path" not in operation:
        raise PatchError(f'operation {index} ({op}): missing "path"')
    tokens = _operation_pointer(path, where)
    if op == "add":
        return _add(doc, tokens, copy.deepcopy(_operand(operation, "value", where)), where)
    if op == "remove":
        _remove(doc, tokens, where)
        return doc
    if op == "replace":
        value = copy.deepcopy(_operand(operation, "value", where))
        if not tokens:
            return value
        _remove(doc, tokens, where)
        return _add(doc, tokens, value, where)
    if op == "test":
        _test(doc, tokens, _operand(operation, "value", where), where)
        return doc
    source = _operation_pointer(_operand(operation, "from", where), where)
    if op == "copy":
        return _add(doc, tokens, copy.deepcopy(_resolve(doc, source, where)), where)
    # move
    if tokens[: len(source)] == source and len(tokens) > len(source):
        raise PatchError(f"{where}: cannot move a value into one of its own children")
    if tokens == source:
        _resolve(doc, source, where)  # still must exist
        return doc
    return _add(doc, tokens, _remove(doc, source, where), where)


def _test(doc: Any, tokens: list[str], expected: Any, where: str) -> None:
    """RFC 6902 `test`, as Kubernetes' json-patch (v4) runs it: a missing member of an
    existing object compares equal to null, so `{"op": "test", "value": null}` checks
    absence; a missing parent fails the test.
    """
    try:
        if tokens and isinstance(parent := _container(doc, tokens, where), dict):
            actual = parent.get(tokens[-1])
        else:
            actual = _resolve(doc, tokens, where)
    except PatchError as exc:
        raise PatchTestFailed(f"testing value {_pointer(tokens)} failed: {exc}") from None
    if not json_equal(actual, expected):
        raise PatchTestFailed(
            f"testing value {_pointer(tokens)} failed: it is {_short(actual)}, "
            f"expected {_short(expected)}"
        )


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy and test, applied in order,
    all or nothing. Returns the patched copy; `target` and `operations` are untouched.
    """
    if not isinstance(operations, list):
        raise MalformedPatchError(
            f"a JSON patch must be a JSON array of operations, got {_type_name(operations)}"
        )
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchTooLargeError(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
            f"got {len(operations)}"
        )
    doc = copy.deepcopy(target)
    for index, operation in enumerate(operations):
        if not isinstance(operation, Mapping):
            raise MalformedPatchError(
                f"operation {index} must be a JSON object, got {_type_name(operation)}"
            )
        doc = _apply_operation(doc, operation, index)
    return doc


# ---------------------------------------------------------------------------
# Strategic merge patch.
# ---------------------------------------------------------------------------

# Patch metadata of the built-in kinds, from the `patchStrategy:"merge"` and
# `patchMergeKey` struct tags of k8s.io/api. Keys are JSON paths with `[]` for list
# items; the value is the merge key of a list of objects, or "" for a list of scalars
# merged as a set (metadata.finalizers). Lists that are not listed are replaced whole
# (atomic), which is also what Kubernetes does for e.g. Pod `status.containerStatuses`,
# `spec.tolerations`, Endpoints `subsets` and Namespace `spec.finalizers`.
_OBJECT_META: Final = {"metadata.finalizers": "", "metadata.ownerReferences": "uid"}
_CONTAINER_LISTS: Final = {
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
}
_POD_SPEC_LISTS: Final = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
}


def _pod_keys() -> dict[str, str]:
    keys = dict(_OBJECT_META)
    for name, key in _POD_SPEC_LISTS.items():
        keys[f"spec.{name}"] = key
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        for name, key in _CONTAINER_LISTS.items():
            keys[f"spec.{containers}[].{name}"] = key
    keys.update(
        {
            "status.conditions": "type",
            "status.podIPs": "ip",
            "status.hostIPs": "ip",
            "status.resourceClaimStatuses": "name",
        }
    )
    return keys


def _workload_keys() -> dict[str, str]:
    """Deployments and ReplicaSets: their pod template merges as a pod does."""
    keys = dict(_OBJECT_META)
    for path, key in _pod_keys().items():
        if not path.startswith("status."):
            keys[f"spec.template.{path}"] = key
    keys["status.conditions"] = "type"
    return keys


MERGE_KEYS: Final[dict[str, dict[str, str]]] = {
    "Pod": _pod_keys(),
    "Deployment": _workload_keys(),
    "ReplicaSet": _workload_keys(),
    "Service": {**_OBJECT_META, "spec.ports": "port", "status.conditions": "type"},
    "Endpoints": dict(_OBJECT_META),
    "ConfigMap": dict(_OBJECT_META),
    "Secret": dict(_OBJECT_META),
    "Namespace": {**_OBJECT_META, "status.conditions": "type"},
    "Event": dict(_OBJECT_META),
    "ServiceAccount": {**_OBJECT_META, "secrets": "name"},
    "PersistentVolumeClaim": {**_OBJECT_META, "status.conditions": "type"},
    "Lease": dict(_OBJECT_META),
    "Node": {
        **_OBJECT_META,
        "spec.podCIDRs": "",
        "status.conditions": "type",
        "status.addresses": "type",
    },
}

# What any other object gets: only the ObjectMeta lists merge.
_DEFAULT_MERGE_KEYS: Final = dict(_OBJECT_META)

_DIRECTIVE: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ELEMENT_ORDER: Final = "$setElementOrder/"
_DELETE_FROM_PRIMITIVE_LIST: Final = "$deleteFromPrimitiveList/"


def supports_strategic_merge(kind: str) -> bool:
    """Whether kube-apiserver accepts a strategic merge patch for `kind`.

    Custom resources do not support it: the server answers 415 UnsupportedMediaType.
    """
    return kind in MERGE_KEYS


def merge_keys_for(kind: str) -> dict[str, str]:
    """The list merge keys of `kind` (ObjectMeta's only, for a kind not in MERGE_KEYS)."""
    return MERGE_KEYS.get(kind, _DEFAULT_MERGE_KEYS)


def strategic_merge_patch(
    target: Mapping[str, Any], patch: Mapping[str, Any], kind: str
) -> dict[str, Any]:
    """Applies a strategic merge patch to a `kind` object, as kube-apiserver does.

    Maps merge key by key and `null` deletes a key. Lists of objects with a merge key
    (MERGE_KEYS) merge item by item: a patch item updates the item with the same key
    value, new items are added; other lists are replaced. Directives:

    * `$patch: replace` in a map replaces the map; as a list item, the whole list.
    * `$patch: delete` in a map empties it; as a list item (with the merge key), deletes
      the matching items.
    * `$retainKeys: [...]` drops every other key from the map.
    * `$deleteFromPrimitiveList/<list>: [...]` removes those values from a scalar list.
    * `$setElementOrder/<list>: [...]` is honoured for merging lists: the result follows
      its order, with items only on the server interleaved by their server order. It is
      accepted and ignored for lists that are replaced anyway.

    Item order otherwise follows Kubernetes: patch items take the patch's order, items
    only on the server keep theirs, and the two are interleaved by the server's order,
    so an item new to the list comes before the server items that follow the last patch
    item that already existed (a single new container goes first). New values have
    their `null`s removed (IgnoreUnmatchedNulls), as the API server does.
    """
    if not isinstance(patch, Mapping):
        raise MalformedPatchError(
            f"a strategic merge patch must be a JSON object, got {_type_name(patch)}"
        )
    if not isinstance(target, Mapping):
        raise PatchError(f"cannot patch a {_type_name(target)}: expected an object")
    return _SmpMerger(merge_keys_for(kind)).merge_map(target, patch, "")


def _child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind_of_items(path: str, *lists: list[Any]) -> str:
    """The kind of the items of lists that must agree: "object", "scalar" or "" (empty)."""
    kinds = set()
    for items in lists:
        for item in items:
            if isinstance(item, list):
                raise MalformedPatchError(f"{path}: lists of lists cannot be merged")
            kinds.add("object" if isinstance(item, Mapping) else "scalar")
    if len(kinds) > 1:
        raise MalformedPatchError(
            f"{path}: list element types are not identical (objects and scalars)"
        )
    return kinds.pop() if kinds else ""


class _SmpMerger:
    """One strategic merge; `merge_keys` maps JSON paths (`[]` for items) to merge keys."""

    def __init__(self, merge_keys: Mapping[str, str]) -> None:
        self.merge_keys = merge_keys

    # -- maps ---------------------------------------------------------------

    def merge_map(
        self, original: Mapping[str, Any] | None, patch: Mapping[str, Any], path: str
    ) -> dict[str, Any]:
        if _DIRECTIVE in patch:
            return self._map_directive(patch, path)
        result = copy.deepcopy(dict(original or {}))
        self._retain_keys(result, patch)
        done = self._set_element_orders(result, patch, path)
        for key, value in patch.items():
            if key in done or key == _RETAIN_KEYS or key.startswith(_SET_ELEMENT_ORDER):
                continue
            if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
                self._delete_from_primitive_list(result, key, value)
            elif key.startswith("$"):
                continue  # unknown directives never reach the stored object
            elif value is None:
                result.pop(key, None)
            else:
                result[key] = self.merge_value(result.get(key), value, _child_path(path, key))
        return result

    def _map_directive(self, patch: Mapping[str, Any], path: str) -> dict[str, Any]:
        directive = patch[_DIRECTIVE]
        if directive == "replace":
            rest = {k: v for k, v in patch.items() if k != _DIRECTIVE}
            return self.merge_map({}, rest, path)
        if directive == "delete":
            return {}
        raise MalformedPatchError(f'unknown patch type: "{directive}" in map: {_short(patch)}')

    def merge_value(self, original: Any, patch: Any, path: str) -> Any:
        """The merge of one value; a value absent from `original` is merged into an empty
        one of its type so that directives inside it are applied and nulls dropped.
        """
        if isinstance(patch, Mapping):
            base = original if isinstance(original, Mapping) else None
            return self.merge_map(base, patch, path)
        if isinstance(patch, list):
            base_list = original if isinstance(original, list) else []
            if path in self.merge_keys:
                return self.merge_list(base_list, patch, self.merge_keys[path], path)
            return [self.fresh(item, f"{path}[]") for item in patch]
        return patch

    def fresh(self, value: Any, path: str) -> Any:
        """A patch value that replaces whatever was there, cleaned of nulls/directives."""
        return self.merge_value(None, value, path)

    @staticmethod
    def _retain_keys(result: dict[str, Any], patch: Mapping[str, Any]) -> None:
        if _RETAIN_KEYS not in patch:
            return
        retained = patch[_RETAIN_KEYS]
        if not isinstance(retained, list):
            raise MalformedPatchError("invalid patch format of retainKeys: it must be a list")
        for key, value in patch.items():
            if value is None or key.startswith("$"):
                continue
            if key not in retained:
                raise MalformedPatchError(
                    f'invalid patch format of retainKeys: "{key}" is in the patch but not '
                    "in $retainKeys"
                )
        for key in list(result):
            if key not in retained:
                del result[key]

    @staticmethod
    def _delete_from_primitive_list(result: dict[str, Any], key: str, values: Any) -> None:
        name = key[len(_DELETE_FROM_PRIMITIVE_LIST) :]
        if not isinstance(values, list):
            raise MalformedPatchError(
                f"invalid patch format of primitive list {name}: it must be a list"
            )
        current = result.get(name)
        if isinstance(current, list):
            result[name] = [item for item in current if not _contains(values, item)]

    def _set_element_orders(
        self, result: dict[str, Any], patch: Mapping[str, Any], path: str
    ) -> set[str]:
        """Applies every `$setElementOrder/<list>` of a merging list; returns the lists done."""
        done: set[str] = set()
        for key, order in patch.items():
            if not key.startswith(_SET_ELEMENT_ORDER):
                continue
            name = key[len(_SET_ELEMENT_ORDER) :]
            if not isinstance(order, list):
                raise MalformedPatchError(f"invalid patch format of setElementOrder list {name}")
            list_path = _child_path(path, name)
            if list_path not in self.merge_keys:
                continue  # a replaced list takes the patch's order anyway
            merge_key = self.merge_keys[list_path]
            original = result.get(name)
            patch_list = patch.get(name)
            if original is not None and not isinstance(original, list):
                continue  # the plain merge below replaces the value
            if patch_list is not None and not isinstance(patch_list, list):
                continue
            if original is None and patch_list is None:
                continue
            _check_set_order(patch_list or [], order, merge_key, name)
            if patch_list is None:
                merged = list(original or [])
            else:
                merged = self.merge_list(original or [], patch_list, merge_key, list_path)
            kind = _kind_of_items(list_path, original or [], patch_list or [])
            in_order = [item for item in merged if _index(order, item, merge_key, kind) >= 0]
            server_only = [item for item in merged if _index(order, item, merge_key, kind) < 0]
            result[name] = _normalize_order(
                in_order, server_only, order, original or [], merge_key, kind
            )
            done.add(name)
        return done

    # -- lists --------------------------------------------------------------

    def merge_list(
        self, original: list[Any], patch: list[Any], merge_key: str, path: str
    ) -> list[Any]:
        if not original and not patch:
            return []
        kind = _kind_of_items(path, original, patch)
        if kind == "scalar":
            merged: list[Any] = []
            for item in [*original, *patch]:  # a set union, as deduplicateScalars
                if not _contains(merged, item):
                    merged.append(item)
        else:
            if not merge_key:
                raise MalformedPatchError(f"cannot merge lists without merge key for {path}")
            original, patch = self._special_list_items(original, patch, merge_key, path)
            merged = self._merge_items(original, patch, merge_key, path)
        in_patch = [item for item in merged if _index(patch, item, merge_key, kind) >= 0]
        server_only = [item for item in merged if _index(patch, item, merge_key, kind) < 0]
        return _normalize_order(in_patch, server_only, patch, original, merge_key, kind)

    def _special_list_items(
        self, original: list[Any], patch: list[Any], merge_key: str, path: str
    ) -> tuple[list[Any], list[Any]]:
        """Applies `$patch` list items; returns the original and the plain patch items.

        With `{"$patch": "replace"}` the plain patch items become the original (cleaned of
        nulls and directives) and nothing is left to merge.
        """
        plain: list[Any] = []
        replace = False
        for item in patch:
            if _DIRECTIVE not in item:
                plain.append(item)
                continue
            directive = item[_DIRECTIVE]
            if directive == "delete":
                if merge_key not in item:
                    raise _no_merge_key(path, item, merge_key)
                original = [
                    o for o in original if not json_equal(o.get(merge_key), item[merge_key])
                ]
            elif directive == "replace":
                replace = True
            elif directive == "merge":
                raise MalformedPatchError("merging lists cannot yet be specified in the patch")
            else:
                raise MalformedPatchError(
                    f'unknown patch type: "{directive}" in map: {_short(item)}'
                )
        if replace:
            return [self.merge_map({}, item, f"{path}[]") for item in plain], []
        return original, plain

    def _merge_items(
        self, original: list[Any], patch: list[Any], merge_key: str, path: str
    ) -> list[Any]:
        merged = [copy.deepcopy(item) for item in original]
        item_path = f"{path}[]"
        for item in patch:
            if merge_key not in item:
                raise _no_merge_key(path, item, merge_key)
            position = _index(merged, item, merge_key, "object")
            if position >= 0:
                merged[position] = self.merge_map(merged[position], item, item_path)
            else:
                merged.append(self.merge_map({}, item, item_path))
        return merged


def _no_merge_key(path: str, item: Any, merge_key: str) -> MalformedPatchError:
    return MalformedPatchError(
        f"{path}: map: {_short(item)} does not contain declared merge key: {merge_key}"
    )


def _contains(items: list[Any], value: Any) -> bool:
    return any(json_equal(item, value) for item in items)


def _index(items: list[Any], value: Any, merge_key: str, kind: str) -> int:
    """Position of `value` in `items`: by merge key value for objects, else by value."""
    for position, item in enumerate(items):
        if kind == "object":
            if (
                isinstance(item, Mapping)
                and isinstance(value, Mapping)
                and json_equal(item.get(merge_key), value.get(merge_key))
            ):
                return position
        elif json_equal(item, value):
            return position
    return -1


def _sort_by(items: list[Any], order: list[Any], merge_key: str, kind: str) -> list[Any]:
    # Stable: items missing from `order` keep their place relative to each other, last.
    def rank(item: Any) -> int:
        position = _index(order, item, merge_key, kind)
        return position if position >= 0 else len(order)

    return sorted(items, key=rank)


def _normalize_order(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
    kind: str,
) -> list[Any]:
    """normalizeElementOrder + mergeSortedSlice of strategicpatch: patch items in patch
    order, server-only items in server order, interleaved where both are on the server.
    """
    right = _sort_by(patch_items, patch_order, merge_key, kind)
    left = _sort_by(server_only, server_order, merge_key, kind)
    result: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            result.append(left[i])
            i += 1
        elif i >= len(left):
            result.append(right[j])
            j += 1
        else:
            li = _index(server_order, left[i], merge_key, kind)
            ri = _index(server_order, right[j], merge_key, kind)
            if li >= 0 and ri >= 0 and li < ri:
                result.append(left[i])
                i += 1
            else:
                result.append(right[j])
                j += 1
    return result


def _check_set_order(patch_list: list[Any], order: list[Any], merge_key: str, name: str) -> None:
    """The patch list must follow the `$setElementOrder` list (deletions aside)."""
    kind = _kind_of_items(name, patch_list, order)
    items = [item for item in patch_list if not (isinstance(item, Mapping) and _DIRECTIVE in item)]
    position = 0
    for item in items:
        found = _index(order[position:], item, merge_key, kind)
        if found < 0:
            raise MalformedPatchError(
                f"the order of the patch list {name} does not match its $setElementOrder list"
            )
        position += found + 1
