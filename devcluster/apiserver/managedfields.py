"""Field ownership (`metadata.managedFields`) and server-side apply, as kube-apiserver's
fieldmanager and sigs.k8s.io/structured-merge-diff (SMD) do it; no HTTP here.

Every write records who set which fields. A field path is a tuple of SMD path
elements in their FieldsV1 spelling: `f:<name>` (a field or map key), `k:{"name":"x"}`
(an item of an associative list, by its keys), `v:<json>` (an item of a set) and
`i:<index>` (an item of any other granular list). A manager's field set is a set of
such paths; FieldsV1 is the same set as a tree, `.` marking a member with members
under it.

- An **Update** (create, update, patch; `fieldManager` or the User-Agent's first
  product names the manager) takes the fields it added or changed, from every other
  manager; fields it removed leave every manager's set.
- An **Apply** (`application/apply-patch+yaml`) merges the applied configuration into
  the live object (SMD's merge: maps key by key, associative lists item by item,
  sets by value, atomic lists and maps replaced), owns exactly the fields of that
  configuration, removes the fields it owned before and applies no more unless
  another manager owns them too (owning a field owns the fields above it; a list item
  counts only as itself), then the containers left empty that nobody owns,
  and fails with 409 Conflict when it would change a field another manager owns,
  unless `force=true`, which moves those fields to it.
- A request that sets `managedFields` to `[]` or `[{}]` clears them; a request with
  entries replaces them; a request without any keeps the live ones.

List types: built-in kinds use the patch metadata of `devcluster.patch` (the
`patchMergeKey` lists are associative, with kube's multi-key lists such as container
ports by `containerPort`+`protocol`, ObjectMeta finalizers a set, everything else
atomic); custom resources use their schema's `x-kubernetes-list-type`,
`x-kubernetes-list-map-keys` and `x-kubernetes-map-type` (lists without a type are
atomic, as in Kubernetes).

Simplifications (docs/devcluster.md lists them for users): struct fields and free-form
map keys are not told apart (an applied map key holding an object owns only its
leaves), a list item whose keys are missing is tracked by its index, there is no cap on
the number of Update managers (`ancient-changes`), and the kubectl client-side apply
annotation is not converted into ownership.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from devcluster import patch as patching
from devcluster.resources.types import ResourceType
from devcluster.store import APIError, Obj, rfc3339
from devcluster.values import as_dict, as_list

Path = tuple[str, ...]

APPLY: Final = "Apply"
UPDATE: Final = "Update"
BEFORE_FIRST_APPLY: Final = "before-first-apply"
SYSTEM_MANAGER: Final = "devcluster"
MAX_MANAGER_LENGTH: Final = 128

# Paths that no manager owns (kube's stripMeta manager).
_STRIPPED: Final[frozenset[Path]] = frozenset(
    {("f:apiVersion",), ("f:kind",), ("f:metadata",)}
    | {
        ("f:metadata", f"f:{name}")
        for name in (
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
        )
    }
)

# Associative lists with more than one key (k8s.io/api `+listMapKey` markers), and
# the defaults their keys get when an item omits them.
_MULTI_KEYS: Final = {
    "ports": ("containerPort", "protocol"),  # a container's
    "spec.ports": ("port", "protocol"),  # a Service's
}
_KEY_DEFAULTS: Final = {"protocol": "TCP"}
# Built-in maps that are atomic (`+structType=atomic` / `+mapType=atomic`).
_ATOMIC_MAPS: Final = {
    "Deployment": {"spec.selector", "spec.template.spec.nodeSelector"},
    "ReplicaSet": {"spec.selector", "spec.template.spec.nodeSelector"},
    "Pod": {"spec.nodeSelector"},
    "Service": {"spec.selector"},
}


# ---------------------------------------------------------------------------
# Schemas: which lists are associative, sets or atomic
# ---------------------------------------------------------------------------


class Schema:
    """The list and map types of one resource; patterns are field names, `[]` for items."""

    def __init__(self, rt: ResourceType) -> None:
        self.kind = rt.kind
        self.openapi = rt.schema if rt.is_custom else None
        self.merge_keys = patching.merge_keys_for("" if rt.is_custom else rt.kind)

    def list_type(self, pattern: Path) -> tuple[str, tuple[str, ...]]:
        """("atomic" | "set" | "map", the keys of a "map" list)."""
        dotted = ".".join(pattern)
        if dotted in ("metadata.finalizers", "metadata.ownerReferences") or self.openapi is None:
            key = self.merge_keys.get(dotted)
            if key is None:
                return "atomic", ()
            if key == "":
                return "set", ()
            if dotted == "spec.ports" and self.kind == "Service":
                return "map", _MULTI_KEYS["spec.ports"]
            if pattern[-1] == "ports" and len(pattern) > 1 and pattern[-2].endswith("ontainers[]"):
                return "map", _MULTI_KEYS["ports"]
            return "map", (key,)
        node = self._node(pattern)
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set":
            return "set", ()
        if list_type == "map":
            keys = tuple(str(k) for k in as_list(node.get("x-kubernetes-list-map-keys")))
            return ("map", keys) if keys else ("atomic", ())
        return "atomic", ()

    def atomic_map(self, pattern: Path) -> bool:
        if self.openapi is None:
            return ".".join(pattern) in _ATOMIC_MAPS.get(self.kind, set())
        node = self._node(pattern)
        return node.get("x-kubernetes-map-type") == "atomic"

    def _node(self, pattern: Path) -> Obj:
        node = as_dict(self.openapi)
        for part in pattern:
            name, item = (part[:-2], True) if part.endswith("[]") else (part, False)
            properties = as_dict(node.get("properties"))
            if name in properties:
                node = as_dict(properties[name])
            else:
                node = as_dict(node.get("additionalProperties"))
            if item:
                node = as_dict(node.get("items"))
        return node


# ---------------------------------------------------------------------------
# Path elements and the nodes of an object
# ---------------------------------------------------------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def item_element(item: Any, index: int, kind: str, keys: tuple[str, ...]) -> str:
    """The path element of a list item: `k:{...}`, `v:...` or `i:<index>`."""
    if kind == "set":
        return "v:" + _compact(item)
    if kind == "map" and isinstance(item, Mapping):
        found = {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in keys}
        if all(v is not None for v in found.values()):
            return "k:" + _compact(found)
    return f"i:{index}"


@dataclass(frozen=True)
class Node:
    value: Any
    leaf: bool  # a scalar, an empty map or an atomic list or map


def nodes(obj: Any, schema: Schema) -> dict[Path, Node]:
    """Every node of `obj` below the root, by path."""
    out: dict[Path, Node] = {}
    _walk(obj, (), (), schema, out)
    out.pop((), None)
    return out


def _walk(value: Any, path: Path, pattern: Path, schema: Schema, out: dict[Path, Node]) -> None:
    if isinstance(value, dict):
        atomic = bool(pattern) and schema.atomic_map(pattern)
        out[path] = Node(value, atomic or not value)
        if atomic:
            return
        for key, child in value.items():
            _walk(child, (*path, f"f:{key}"), (*pattern, str(key)), schema, out)
    elif isinstance(value, list):
        kind, keys = schema.list_type(pattern)
        out[path] = Node(value, kind == "atomic")
        if kind == "atomic":
            return
        item_pattern = (*pattern[:-1], pattern[-1] + "[]")
        for index, item in enumerate(value):
            element = item_element(item, index, kind, keys)
            if (*path, element) not in out:  # duplicates: the first one is tracked
                _walk(item, (*path, element), item_pattern, schema, out)
    else:
        out[path] = Node(value, True)


def _is_item(path: Path) -> bool:
    return bool(path) and path[-1][:2] in ("k:", "v:", "i:")


def applied_set(config: Obj, schema: Schema) -> set[Path]:
    """The fields an applied configuration owns (SMD's ToFieldSet): its leaves, its
    list items, its empty maps and its atomic lists and maps."""
    return {p for p, n in nodes(config, schema).items() if n.leaf or _is_item(p)}


@dataclass
class Comparison:
    added: set[Path]
    modified: set[Path]
    removed: set[Path]


def compare(old: Any, new: Any, schema: Schema) -> Comparison:
    before, after = nodes(old, schema), nodes(new, schema)
    modified = {
        p
        for p, n in after.items()
        if p in before and (n.leaf or before[p].leaf) and not _same(n.value, before[p].value)
    }
    return Comparison(set(after) - set(before), modified, set(before) - set(after))


def _same(left: Any, right: Any) -> bool:
    return type(left) is type(right) and left == right


# ---------------------------------------------------------------------------
# FieldsV1
# ---------------------------------------------------------------------------


def to_fields_v1(paths: Iterable[Path]) -> Obj:
    members = set(paths)
    tree: Obj = {}
    for path in members:
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    return _mark(tree, (), members)


def _mark(tree: Obj, path: Path, members: set[Path]) -> Obj:
    out: Obj = {}
    if path in members and tree:
        out["."] = {}
    for element in sorted(tree):
        out[element] = _mark(tree[element], (*path, element), members)
    return out


def from_fields_v1(tree: Any, path: Path = ()) -> set[Path]:
    if not isinstance(tree, dict):
        raise ValueError(f"expected an object at {_dotted(path) or 'the root'}")
    members: set[Path] = set()
    if path and (not tree or "." in tree):
        members.add(path)
    for element, child in tree.items():
        if element == ".":
            continue
        if not isinstance(element, str) or element[:2] not in ("f:", "k:", "v:", "i:"):
            raise ValueError(f"unknown path element {element!r}")
        members |= from_fields_v1(child, (*path, element))
    return members


def _dotted(path: Path) -> str:
    """A path as SMD prints it: `.spec.containers[name="x"].image`."""
    text = ""
    for element in path:
        tag, rest = element[:2], element[2:]
        if tag == "f:":
            text += "." + rest
        elif tag == "k:":
            keys = json.loads(rest)
            text += "[" + ",".join(f"{k}={_compact(v)}" for k, v in keys.items()) + "]"
        elif tag == "v:":
            text += "[=" + rest + "]"
        else:
            text += "[" + rest + "]"
    return text


# ---------------------------------------------------------------------------
# Managers
# ---------------------------------------------------------------------------


@dataclass
class Manager:
    manager: str
    operation: str
    api_version: str
    subresource: str
    fields: set[Path] = field(default_factory=set)
    time: str | None = None

    @property
    def identity(self) -> tuple[str, str, str, str]:
        # kube's manager identifier: an applier keeps its identity across versions.
        version = "" if self.operation == APPLY else self.api_version
        return self.manager, self.operation, version, self.subresource

    def describe(self) -> str:
        """As kube's conflict messages name a manager."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        return text

    def entry(self) -> Obj:
        out: Obj = {"manager": self.manager, "operation": self.operation}
        out["apiVersion"] = self.api_version
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = to_fields_v1(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def decode(entries: Any) -> list[Manager]:
    """managedFields entries as managers; raises ValueError for a malformed entry."""
    managers: list[Manager] = []
    for index, entry in enumerate(as_list(entries)):
        if not isinstance(entry, dict):
            raise ValueError(f"managedFields[{index}] must be an object")
        operation = entry.get("operation")
        if operation not in (APPLY, UPDATE):
            raise ValueError(
                f'managedFields[{index}].operation must be "Apply" or "Update", got '
                f"{json.dumps(operation)}"
            )
        if entry.get("fieldsType", "FieldsV1") != "FieldsV1":
            raise ValueError(f'managedFields[{index}].fieldsType must be "FieldsV1"')
        try:
            paths = from_fields_v1(entry.get("fieldsV1") or {})
        except ValueError as exc:
            raise ValueError(f"managedFields[{index}].fieldsV1: {exc}") from exc
        managers.append(
            Manager(
                str(entry.get("manager") or ""),
                str(operation),
                str(entry.get("apiVersion") or ""),
                str(entry.get("subresource") or ""),
                paths,
                entry.get("time"),
            )
        )
    return managers


def encode(managers: list[Manager]) -> list[Obj]:
    """Entries in kube's order: Apply before Update, then by time, manager, version."""
    return sorted((m.entry() for m in managers if m.fields), key=_entry_order)


def is_reset(entries: Any) -> bool:
    """`managedFields: []` or `[{}]`: the request clears the managed fields."""
    if not isinstance(entries, list):
        return False
    return entries == [] or entries == [{}]


def copy_object(obj: Obj) -> Obj:
    """A deep copy of an object that shares its managedFields: the API server never
    changes entries in place (every write builds new ones), and copying their FieldsV1
    trees would double the cost of copying an object."""
    m = obj.get("metadata")
    if not isinstance(m, dict) or "managedFields" not in m:
        return copy.deepcopy(obj)
    shallow = dict(obj)
    shallow["metadata"] = {k: v for k, v in m.items() if k != "managedFields"}
    out = copy.deepcopy(shallow)
    out["metadata"]["managedFields"] = m["managedFields"]
    return out


def patch_touches_managed_fields(json_patch: bool, document: Any) -> bool:
    """Whether a patch document (a JSON patch, else a merge or strategic merge patch)
    names `metadata.managedFields`."""
    if json_patch:
        for operation in as_list(document):
            for key in ("path", "from"):
                pointer = as_dict(operation).get(key)
                if isinstance(pointer, str) and pointer.startswith("/metadata/managedFields"):
                    return True
        return False
    return isinstance(document, dict) and "managedFields" in as_dict(document.get("metadata"))


def manager_from_user_agent(user_agent: str) -> str:
    """kube-apiserver's default field manager: the User-Agent up to its first `/`."""
    return user_agent.split("/", 1)[0][:MAX_MANAGER_LENGTH]


def _strip(paths: Iterable[Path], rt: ResourceType, subresource: str) -> set[Path]:
    """Drop the paths nobody owns and those the endpoint resets (status on the main
    resource, everything but status on the status subresource)."""
    kept = {p for p in paths if p not in _STRIPPED}
    if subresource == "status":
        return {p for p in kept if p[0] == "f:status"}
    if rt.status and not subresource:
        return {p for p in kept if p[0] != "f:status"}
    return kept


def _find(managers: list[Manager], identity: tuple[str, str, str, str]) -> Manager | None:
    for m in managers:
        if m.identity == identity:
            return m
    return None


# ---------------------------------------------------------------------------
# Update
# ---------------------------------------------------------------------------


def update(
    rt: ResourceType,
    live: Obj | None,
    new: Obj,
    requested: Any,
    manager: str,
    subresource: str | None,
) -> list[Obj]:
    """The managedFields after a create/update/patch by `manager` turned `live` (None:
    nothing) into `new`; `requested` is the managedFields the request's object carried.

    Every write runs this, so it decodes only the entries the write touches and compares
    only what the endpoint writes (status alone on `/status`).
    """
    sub = subresource or ""
    live_entries = as_list(as_dict((live or {}).get("metadata")).get("managedFields"))
    entries: list[Obj] = live_entries
    if not sub and is_reset(requested):
        entries = []
    elif not sub and requested and requested != live_entries:
        try:
            decode(requested)
            entries = list(requested)
        except ValueError:
            pass  # as upstream: unreadable managedFields in a request keep the live ones
    schema = Schema(rt)
    diff = compare(_scope(live or {}, rt, sub), _scope(new, rt, sub), schema)
    changed = _strip(diff.added | diff.modified, rt, sub)
    touched = changed | diff.removed
    if not touched:
        return [dict(e) for e in entries]
    me = Manager(manager, UPDATE, rt.api_version, sub)
    result: list[Obj] = []
    managers: list[Manager] = []
    for entry in entries:
        identity = _identity(entry)
        if identity != me.identity and not any(_tree_has(entry, p) for p in touched):
            result.append(entry)  # untouched: kept as it is
            continue
        (decoded,) = decode([entry])
        decoded.fields -= touched
        if identity == me.identity:
            me = decoded
        elif decoded.fields:
            managers.append(decoded)
    if changed:
        me.fields |= changed
        me.time = rfc3339()
    if me.fields:
        managers.append(me)
    result.extend(m.entry() for m in managers)
    result.sort(key=_entry_order)
    return result


def _identity(entry: Obj) -> tuple[str, str, str, str]:
    operation = str(entry.get("operation") or "")
    version = "" if operation == APPLY else str(entry.get("apiVersion") or "")
    return (
        str(entry.get("manager") or ""),
        operation,
        version,
        str(entry.get("subresource") or ""),
    )


def _entry_order(entry: Obj) -> tuple[str, str, str, str, str]:
    return (
        str(entry.get("operation") or ""),
        str(entry.get("time") or ""),
        str(entry.get("manager") or ""),
        str(entry.get("apiVersion") or ""),
        str(entry.get("subresource") or ""),
    )


def _tree_has(entry: Obj, path: Path) -> bool:
    """Whether `path` is in the entry's FieldsV1 (as a member or above one)."""
    node = entry.get("fieldsV1")
    for element in path:
        if not isinstance(node, dict) or element not in node:
            return False
        node = node[element]
    return True


def _scope(obj: Obj, rt: ResourceType, subresource: str) -> Obj:
    """What a write through `subresource` can change, without managedFields."""
    if subresource == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    out = _body(obj)
    if rt.status and not subresource:
        out.pop("status", None)
    return out


def _body(obj: Obj) -> Obj:
    """The object without its managed fields (they are not fields of their own)."""
    out = dict(obj)
    m = as_dict(obj.get("metadata"))
    if "managedFields" in m:
        out["metadata"] = {k: v for k, v in m.items() if k != "managedFields"}
    return out


# ---------------------------------------------------------------------------
# Apply
# ---------------------------------------------------------------------------


def apply(
    rt: ResourceType,
    live: Obj | None,
    config: Obj,
    manager: str,
    subresource: str | None,
    *,
    force: bool,
) -> tuple[Obj, list[Obj]]:
    """Server-side apply of `config` by `manager` onto `live` (None: a create).

    Returns the new object (without managedFields) and its managedFields; raises a
    409 Conflict naming the other managers' fields it would change, unless `force`.
    """
    sub = subresource or ""
    schema = Schema(rt)
    config = _reset_fields(_body(config), rt, sub)
    current = _body(live) if live is not None else {}
    managers = decode(as_dict((live or {}).get("metadata")).get("managedFields"))
    if live is not None and not managers:
        # kube's skipNonApplied manager: what an object holds before its first apply
        # is owned by an Update manager, so an apply does not take it silently.
        everything = _strip(nodes(current, schema), rt, sub)
        managers = [Manager(BEFORE_FIRST_APPLY, UPDATE, rt.api_version, sub, everything)]
    merged = merge(current, config, schema, ())
    me = Manager(manager, APPLY, rt.api_version, sub)
    previous = _find(managers, me.identity)
    last = set(previous.fields) if previous is not None else set()
    if previous is not None:
        managers.remove(previous)
    me.fields = _strip(applied_set(config, schema), rt, sub)
    managers.append(me)
    if last:
        owned: set[Path] = set()
        for m in managers:
            owned |= _closure(m.fields)
        merged = prune(merged, last, owned, schema)
    diff = compare(current, merged, schema)
    changed = diff.added | diff.modified
    conflicts = [
        (m, p) for m in managers if m is not me for p in sorted(m.fields & changed, key=_dotted)
    ]
    if conflicts and not force:
        raise conflict_error(conflicts)
    for m in managers:
        if m is not me:
            m.fields -= changed | diff.removed
    if live is None or not _same(current, merged) or me.time is None:
        me.time = rfc3339()
    return merged, encode(managers)


def _reset_fields(config: Obj, rt: ResourceType, subresource: str) -> Obj:
    """The applied configuration less what the endpoint does not write (kube's reset
    fields): status on the main resource of a kind with a status subresource,
    everything but status (and the object's identity) on `/status`."""
    if subresource == "status":
        identity = {
            k: v
            for k, v in as_dict(config.get("metadata")).items()
            if k in ("name", "namespace", "resourceVersion")
        }
        out = {k: v for k, v in config.items() if k in ("apiVersion", "kind", "status")}
        out["metadata"] = identity
        return out
    if rt.status and not subresource:
        return {k: v for k, v in config.items() if k != "status"}
    return config


def _closure(paths: Iterable[Path]) -> set[Path]:
    """The paths with the fields above them (SMD's EnsureNamedFieldsAreMembers): owning
    `.spec.replicas` owns `.spec`; list items are owned only as members."""
    out: set[Path] = set()
    for p in paths:
        out.add(p)
        for i in range(1, len(p)):
            if p[i - 1].startswith("f:"):
                out.add(p[:i])
    return out


def merge(live: Any, config: Any, schema: Schema, pattern: Path) -> Any:
    """SMD's merge of an applied configuration into a live value; `null` removes."""
    if isinstance(live, dict) and isinstance(config, dict):
        if pattern and schema.atomic_map(pattern):
            return _no_nulls(config)
        out = dict(live)
        for key, value in config.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value, schema, (*pattern, str(key)))
            else:
                out[key] = _no_nulls(value)
        return out
    if isinstance(live, list) and isinstance(config, list):
        kind, keys = schema.list_type(pattern)
        if kind != "atomic":
            return _merge_granular(live, config, schema, pattern, kind, keys)
    return _no_nulls(config)


def _merge_granular(
    live: list[Any],
    config: list[Any],
    schema: Schema,
    pattern: Path,
    kind: str,
    keys: tuple[str, ...],
) -> list[Any]:
    """SMD's merge of an associative list or a set: items only on the server keep their
    place, shared items follow the configuration's order, new items come where the
    configuration puts them."""
    item_pattern = (*pattern[:-1], pattern[-1] + "[]")
    live_keys = [item_element(item, i, kind, keys) for i, item in enumerate(live)]
    config_keys = [item_element(item, i, kind, keys) for i, item in enumerate(config)]
    if any(k.startswith("i:") for k in live_keys + config_keys):
        return [_no_nulls(v) for v in config]  # items without their keys: replaced whole
    lhs = dict(zip(reversed(live_keys), reversed(live), strict=True))  # first one wins
    rhs = dict(zip(config_keys, config, strict=True))
    left = list(dict.fromkeys(live_keys))
    right = list(dict.fromkeys(config_keys))
    shared = [k for k in right if k in lhs]
    out: list[Any] = []
    done: set[str] = set()

    def emit(key: str) -> None:
        done.add(key)
        if key in lhs and key in rhs:
            out.append(merge(lhs[key], rhs[key], schema, item_pattern))
        else:
            out.append(lhs[key] if key in lhs else _no_nulls(rhs[key]))

    li = ri = 0
    while li < len(left) or ri < len(right):
        while shared and shared[0] in done:
            shared.pop(0)
        if li < len(left) and left[li] in done:
            li += 1
            continue
        if li < len(left) and ri < len(right):
            key = left[li]
            if key == right[ri]:
                emit(key)
                li, ri = li + 1, ri + 1
                continue
            if key in rhs and shared and shared[0] != key:
                li += 1  # a shared item the configuration places later
                continue
        if li < len(left) and left[li] not in rhs:
            emit(left[li])
            li += 1
            continue
        if ri < len(right):
            emit(right[ri])
            ri += 1
            continue
        li += 1
    return out


def _no_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


def prune(merged: Obj, last: set[Path], owned: set[Path], schema: Schema) -> Obj:
    """Remove what the applier owned before (`last`) and nobody owns now (`owned`,
    closed under prefixes), then the containers that became empty and nobody owns."""
    gone = sorted((p for p in last if p not in owned and p not in _STRIPPED), key=len)
    result = merged
    removed: list[Path] = []
    for path in gone:
        if any(path[: len(r)] == r for r in removed):
            continue
        result = _remove(result, path, schema)
        removed.append(path)
    for path in sorted(_closure(last) - owned - _STRIPPED - set(last), key=len, reverse=True):
        node = nodes(result, schema).get(path)
        if node is not None and isinstance(node.value, (dict, list)) and not node.value:
            result = _remove(result, path, schema)
    return result


def _remove(obj: Obj, path: Path, schema: Schema) -> Obj:
    """A copy of `obj` without the node at `path` (unchanged when it is not there)."""

    def walk(value: Any, rest: Path, pattern: Path) -> Any:
        element = rest[0]
        if isinstance(value, dict) and element.startswith("f:"):
            key = element[2:]
            if key not in value:
                return value
            out = dict(value)
            if len(rest) == 1:
                del out[key]
            else:
                out[key] = walk(value[key], rest[1:], (*pattern, key))
            return out
        if isinstance(value, list):
            kind, keys = schema.list_type(pattern)
            item_pattern = (*pattern[:-1], pattern[-1] + "[]")
            out_list = []
            for index, item in enumerate(value):
                if item_element(item, index, kind, keys) != element:
                    out_list.append(item)
                elif len(rest) > 1:
                    out_list.append(walk(item, rest[1:], item_pattern))
            return out_list
        return value

    result = walk(obj, path, ())
    assert isinstance(result, dict)
    return result


def conflict_error(conflicts: list[tuple[Manager, Path]]) -> APIError:
    """kube-apiserver's 409 for an apply that would change other managers' fields."""
    if len(conflicts) == 1:
        manager, path = conflicts[0]
        message = (
            f"Apply failed with 1 conflict: conflict with {manager.describe()}: {_dotted(path)}"
        )
    else:
        by_manager: dict[str, list[Path]] = {}
        for manager, path in conflicts:
            by_manager.setdefault(manager.describe(), []).append(path)
        lines: list[str] = []
        for described in sorted(by_manager):
            lines.append(f"conflicts with {described}:")
            lines.extend(f"- {_dotted(p)}" for p in by_manager[described])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {m.describe()}",
            "field": _dotted(p),
        }
        for m, p in conflicts
    ]
    return APIError(409, "Conflict", message, {"causes": causes})  # no name, as upstream
