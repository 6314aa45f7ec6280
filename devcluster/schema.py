"""Structural OpenAPI v3 schemas of CustomResourceDefinitions, as kube-apiserver applies them.

For a custom resource, the API server (k8s.io/apiextensions-apiserver) in this order:

1. drops `null`s of fields that are not `nullable` (`drop_nulls`),
2. prunes fields the schema does not know (`prune`) — a warning
   `unknown field "spec.x"` each, or with `fieldValidation=Strict` a 400 BadRequest
   `strict decoding error: unknown field "spec.x"`,
3. applies the schema's defaults (`apply_defaults`),
4. validates the OpenAPI constraints (`validate`),
5. evaluates every `x-kubernetes-validations` CEL rule (`evaluate_rules`), unless step 4
   found a *blocking* error (wrong type, required, enum, too long, too many); then it adds
   "some validation rules were not checked because the object was invalid; correct the
   existing errors to complete validation" instead, as strategy.go's hasBlockingErr does.

`admit` runs all five. On updates (`old_obj` given), validation ratchets as Kubernetes
1.30+ does (CRDValidationRatcheting): errors inside a value that is unchanged from the
old object are not reported, except for CEL transition rules (those using `oldSelf`).

Error texts follow kube-apiserver (kube-openapi messages wrapped in field.Error), e.g.
`spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal
to 1`; `FieldError.describe()` gives that line and `FieldError.body()` the part after the
field, which is what a Status cause's `message` holds. Errors at the root of the object
have the field `<nil>`, as Kubernetes prints an empty field.Path.

Documented deviations and choices:

* Integer fields accept integral floats (`2.0`), as kube-openapi does (isFloatInt);
  `admit` stores them as ints, which is what a client reads back from Kubernetes.
* `pattern` uses RE2 itself (google-re2, a dependency of cel-python): `$` is end of text
  and Python-only syntax (look-arounds, backreferences) does not compile.
* `format` is checked for date-time, date, duration, byte, uuid(3/4/5), ipv4, ipv6, cidr
  and mac; other formats are accepted unchecked.
* CEL is evaluated with celpy instead of cel-go. A rule celpy cannot compile or evaluate
  (e.g. Kubernetes' extension libraries beyond the few added here, optional types) is
  not enforced and yields a warning naming the rule, never a silent pass. Runtime
  errors cel-go would also raise (no such key, division by zero, overflow, index out of
  bounds) are validation errors worded like Kubernetes'. There is no cost budget.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import ipaddress
import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import celpy
import re2
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from devcluster.gofmt import field_error_value, go_float
from devcluster.patch import json_equal

__all__ = [
    "BLOCKING_REASONS",
    "DUPLICATE",
    "FORBIDDEN",
    "INVALID",
    "NOT_SUPPORTED",
    "REQUIRED",
    "ROOT_FIELD",
    "TOO_LONG",
    "TOO_MANY",
    "TYPE_INVALID",
    "AdmissionResult",
    "FieldError",
    "admit",
    "apply_defaults",
    "cel_compile_warnings",
    "drop_nulls",
    "evaluate_rules",
    "go_float",
    "prune",
    "structural_problems",
    "validate",
]

Schema = Mapping[str, Any]

REQUIRED: Final = "FieldValueRequired"
INVALID: Final = "FieldValueInvalid"
NOT_SUPPORTED: Final = "FieldValueNotSupported"
TYPE_INVALID: Final = "FieldValueTypeInvalid"
TOO_LONG: Final = "FieldValueTooLong"
TOO_MANY: Final = "FieldValueTooMany"
DUPLICATE: Final = "FieldValueDuplicate"
FORBIDDEN: Final = "FieldValueForbidden"

# Errors after which Kubernetes does not evaluate CEL rules at all.
BLOCKING_REASONS: Final = frozenset({NOT_SUPPORTED, REQUIRED, TOO_LONG, TOO_MANY, TYPE_INVALID})
NOT_ALL_RULES_CHECKED: Final = (
    "some validation rules were not checked because the object was invalid; correct the "
    "existing errors to complete validation"
)

# How Kubernetes prints the empty field path (the root of the object).
ROOT_FIELD: Final = "<nil>"

# Fields of the resource root that the server handles, not the schema.
_ROOT_FIELDS: Final = ("apiVersion", "kind", "metadata")


class _Missing:
    """No value at all (unlike None, which is JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


# ---------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------


@dataclass
class FieldError:
    """One field-level validation error (a metav1.StatusCause once served).

    `reason` is the StatusCause reason (FieldValueInvalid, ...), `message` the detail
    after the value, `value` the bad value as Kubernetes reports it (for type errors
    the JSON type name, for CEL rules the schema type of the node, as kube-apiserver).
    """

    field: str
    reason: str
    message: str
    value: Any = None

    def body(self) -> str:
        """The text after `field: `, as in a Status cause's message."""
        head = {
            REQUIRED: "Required value",
            FORBIDDEN: "Forbidden",
            TOO_LONG: "Too long",
        }.get(self.reason)
        if head is None:
            label = {
                NOT_SUPPORTED: "Unsupported value",
                DUPLICATE: "Duplicate value",
                TOO_MANY: "Too many",
            }.get(self.reason, "Invalid value")
            head = f"{label}: {field_error_value(self.value)}"
        return f"{head}: {self.message}" if self.message else head

    def describe(self) -> str:
        """The whole line, e.g. `spec.foo: Required value`."""
        return f"{self.field or ROOT_FIELD}: {self.body()}"


def _field(path: str) -> str:
    return path or ROOT_FIELD


def _subject(path: str) -> str:
    """How kube-openapi names a value in its messages: `spec.replicas in body`."""
    return f"{path} in body" if path else "body"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------
# Schema helpers.
# ---------------------------------------------------------------------------


def _properties(node: Schema) -> Mapping[str, Schema]:
    properties = node.get("properties")
    return properties if isinstance(properties, Mapping) else {}


def _additional(node: Schema) -> Schema | None:
    """The schema of additionalProperties values, when it is a schema."""
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def _items(node: Schema) -> Schema | None:
    items = node.get("items")
    return items if isinstance(items, Mapping) else None


def _preserves_unknown(node: Schema) -> bool:
    return node.get("x-kubernetes-preserve-unknown-fields") is True


def _child_schema(node: Schema, key: str) -> Schema | None:
    """The schema of the value at `key` of an object node, if it has one."""
    properties = _properties(node)
    if key in properties:
        return properties[key]
    return _additional(node)


def _declared_types(node: Schema) -> list[str]:
    if node.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    declared = node.get("type")
    return [declared] if isinstance(declared, str) and declared else []


def _json_type(value: Any) -> str:
    """The JSON type kube-openapi infers from a decoded value (float64 is "number")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    """A schema's numeric keyword (minimum, ...), or None when absent or not a number."""
    return value if _is_number(value) else None


def _type_matches(value: Any, declared: list[str]) -> bool:
    actual = _json_type(value)
    if actual in declared:
        return True
    if actual == "integer" and "number" in declared:
        return True
    # kube-openapi's isFloatInt: 2.0 is an integer.
    return actual == "number" and "integer" in declared and float(value).is_integer()


def _old_child(old: Any, key: str) -> Any:
    return old[key] if isinstance(old, Mapping) and key in old else MISSING


def _list_map_key(node: Schema, item: Any) -> str | None:
    """A comparable key of a list-type=map item (defaults fill missing key fields)."""
    if not isinstance(item, Mapping):
        return None
    item_schema = _items(node) or {}
    key_values = []
    for name in node.get("x-kubernetes-list-map-keys") or []:
        if name in item:
            key_values.append(item[name])
        else:
            key_values.append(_properties(item_schema).get(name, {}).get("default", MISSING))
    return json.dumps(key_values, sort_keys=True, default=repr)


def _old_item(node: Schema, item: Any, old_list: Any) -> Any:
    """The old value of a list item: only list-type=map items are correlated (by key)."""
    if node.get("x-kubernetes-list-type") != "map" or not isinstance(old_list, list):
        return MISSING
    key = _list_map_key(node, item)
    for old_item in old_list:
        if key is not None and _list_map_key(node, old_item) == key:
            return old_item
    return MISSING


# ---------------------------------------------------------------------------
# Nulls, pruning and defaults.
# ---------------------------------------------------------------------------


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
            child = _child_schema(node, key)
            if child is None:
                continue
            if value[key] is None and not child.get("nullable") and "default" not in child:
                del value[key]
            else:
                _drop_nulls(child, value[key])
    elif isinstance(value, list):
        for item in value:
            _drop_nulls(_items(node), item)
    return value


def prune(schema: Schema, obj: Any) -> tuple[Any, list[str]]:
    """A copy of `obj` without the fields the schema does not specify, and their paths.

    Fields survive under `x-kubernetes-preserve-unknown-fields: true` and
    `additionalProperties`; `apiVersion`, `kind` and `metadata` survive at the root and
    in `x-kubernetes-embedded-resource` objects (the server handles metadata).
    """
    removed: list[str] = []
    pruned = _prune(schema, copy.deepcopy(obj), "", removed, root=True)
    return pruned, removed


def _prune(node: Schema | None, value: Any, path: str, removed: list[str], *, root: bool) -> Any:
    if node is None:
        return value
    if isinstance(value, dict):
        properties = _properties(node)
        extra = node.get("additionalProperties")
        keep_meta = root or node.get("x-kubernetes-embedded-resource") is True
        for key in list(value):
            child_path = _join(path, key)
            if keep_meta and key in _ROOT_FIELDS and (root or key not in properties):
                continue
            if key in properties:
                value[key] = _prune(properties[key], value[key], child_path, removed, root=False)
            elif isinstance(extra, Mapping):
                value[key] = _prune(extra, value[key], child_path, removed, root=False)
            elif extra is True or _preserves_unknown(node):
                continue
            else:
                del value[key]
                removed.append(child_path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _prune(_items(node), item, f"{path}[{index}]", removed, root=False)
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
        for key, child in _properties(node).items():
            if root and key in _ROOT_FIELDS:
                continue
            if "default" in child and (
                key not in value or (value[key] is None and not child.get("nullable"))
            ):
                value[key] = copy.deepcopy(child["default"])
        for key, item in value.items():
            if root and key == "metadata":
                continue
            _default(_child_schema(node, key), item)
    elif isinstance(value, list):
        items = _items(node)
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


def _normalize_integers(node: Schema | None, value: Any) -> Any:
    """Integral floats at integer nodes become ints (2.0 is stored and served as 2)."""
    if node is None:
        return value
    if isinstance(value, float) and "integer" in _declared_types(node) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalize_integers(_child_schema(node, k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize_integers(_items(node), item) for item in value]
    return value


# ---------------------------------------------------------------------------
# OpenAPI validation.
# ---------------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are reported, not logged to stderr


@functools.lru_cache(maxsize=2048)
def _compile_pattern(pattern: str) -> tuple[Any, str]:
    """(compiled RE2 pattern, "") or (None, why it does not compile)."""
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS), ""
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return None, str(reason)
    except (TypeError, ValueError) as exc:
        return None, str(exc)


_DATE_TIME_TAIL = re.compile(
    r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$"
)
_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.I)
_UUID_VERSION = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-([345])[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I
)
_MAC = re.compile(
    r"^([0-9a-f]{2}([:-]))([0-9a-f]{2}\2){4}[0-9a-f]{2}$"
    r"|^([0-9a-f]{2}([:-]))([0-9a-f]{2}\5){6}[0-9a-f]{2}$"
    r"|^([0-9a-f]{4}\.){2}[0-9a-f]{4}$",
    re.I,
)
_GO_DURATION = re.compile(r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)$")
_WORD_DURATION = re.compile(
    r"^\s*(\d+\s*(ns|us|µs|ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs"
    r"|hour|hours|d|day|days|w|wk|wks|week|weeks)\s*)+$"
)


def _is_date(text: str) -> bool:
    match = _DATE.match(text)
    if not match:
        return False
    year, month, day = (int(part) for part in match.groups())
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31]
    days += [30, 31, 31, 30, 31, 30, 31]
    return 1 <= month <= 12 and 1 <= day <= days[month - 1]


def _is_date_time(text: str) -> bool:
    """strfmt.IsDateTime: an RFC 3339 date, `T`, then hh:mm:ss[.frac](Z|±hh:mm)."""
    parts = text.lower().split("t")
    if len(text) < 4 or len(parts) < 2 or not _is_date(parts[0]):
        return False
    match = _DATE_TIME_TAIL.match(parts[1])
    if match is None:
        return False
    hours, minutes, seconds = match.group(1, 2, 3)
    return hours <= "23" and minutes <= "59" and seconds <= "59"


def _is_byte(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _is_cidr(text: str) -> bool:
    if "/" not in text:
        return False
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


_FORMATS: Final[dict[str, Callable[[str], bool]]] = {
    "date-time": _is_date_time,
    "datetime": _is_date_time,
    "date": _is_date,
    "duration": lambda s: bool(_GO_DURATION.match(s) or _WORD_DURATION.match(s)),
    "byte": _is_byte,
    "uuid": lambda s: bool(_UUID.match(s)),
    "uuid3": lambda s: bool((m := _UUID_VERSION.match(s)) and m.group(1) == "3"),
    "uuid4": lambda s: bool((m := _UUID_VERSION.match(s)) and m.group(1) == "4"),
    "uuid5": lambda s: bool((m := _UUID_VERSION.match(s)) and m.group(1) == "5"),
    "ipv4": lambda s: _is_ip(s, 4),
    "ipv6": lambda s: _is_ip(s, 6),
    "cidr": _is_cidr,
    "mac": lambda s: bool(_MAC.match(s)),
}


def validate(schema: Schema, obj: Any, path: str = "", old_obj: Any = None) -> list[FieldError]:
    """Every OpenAPI error of `obj` (already pruned and defaulted) under `schema`.

    With `old_obj` (an update), values equal to their old counterpart are not validated
    (ratcheting). At the root (`path` ""), `metadata` is only checked to be an object.
    """
    errors: list[FieldError] = []
    old = MISSING if old_obj is None else old_obj
    _Validator(errors).node(schema, obj, path, old, root=not path)
    return errors


class _Validator:
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors

    def add(self, path: str, reason: str, message: str, value: Any = None) -> None:
        self.errors.append(FieldError(_field(path), reason, message, value))

    def node(self, node: Schema, value: Any, path: str, old: Any, *, root: bool = False) -> None:
        if old is not MISSING and json_equal(old, value):
            return  # unchanged on update: ratcheted
        declared = _declared_types(node)
        if value is None:
            if declared and not node.get("nullable"):
                self.type_error(path, declared, "null")
            return
        if declared and not _type_matches(value, declared):
            self.type_error(path, declared, _json_type(value))
            return
        self.enum(node, value, path)
        if isinstance(value, str):
            self.string(node, value, path)
        elif _is_number(value):
            self.number(node, value, path)
        elif isinstance(value, list):
            self.array(node, value, path, old)
        elif isinstance(value, Mapping):
            self.object(node, value, path, old, root=root)
        self.value_validations(node, value, path)

    def type_error(self, path: str, declared: list[str], actual: str) -> None:
        types = ",".join(declared)
        message = f'{_subject(path)} must be of type {types}: "{actual}"'
        self.add(path, TYPE_INVALID, message, actual)

    def enum(self, node: Schema, value: Any, path: str) -> None:
        allowed = node.get("enum")
        if not isinstance(allowed, list) or any(json_equal(value, a) for a in allowed):
            return
        quoted = ", ".join(
            json.dumps(a if isinstance(a, str) else json.dumps(a), ensure_ascii=False)
            for a in allowed
        )
        self.add(path, NOT_SUPPORTED, f"supported values: {quoted}", value)

    def string(self, node: Schema, value: str, path: str) -> None:
        length = len(value)  # Unicode code points, like kube-openapi
        if isinstance(node.get("maxLength"), int) and length > node["maxLength"]:
            maximum = node["maxLength"]
            unit = "byte" if maximum == 1 else "bytes"
            self.add(path, TOO_LONG, f"may not be more than {maximum} {unit}", value)
        if isinstance(node.get("minLength"), int) and length < node["minLength"]:
            message = f"{_subject(path)} should be at least {node['minLength']} chars long"
            self.add(path, INVALID, message, value)
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            compiled, problem = _compile_pattern(pattern)
            if compiled is None:
                message = f"the schema's pattern '{pattern}' is not a valid RE2 regexp: {problem}"
                self.add(path, INVALID, message, value)
            elif not compiled.search(value):
                self.add(path, INVALID, f"{_subject(path)} should match '{pattern}'", value)
        checker = _FORMATS.get(str(node.get("format")))
        if checker is not None and not checker(value):
            quoted = json.dumps(value, ensure_ascii=False)
            message = f"{_subject(path)} must be of type {node['format']}: {quoted}"
            self.add(path, TYPE_INVALID, message, value)

    def number(self, node: Schema, value: float, path: str) -> None:
        subject = _subject(path)
        minimum, maximum = _number(node.get("minimum")), _number(node.get("maximum"))
        if minimum is not None:
            if node.get("exclusiveMinimum") is True and value <= minimum:
                self.add(
                    path, INVALID, f"{subject} should be greater than {go_float(minimum)}", value
                )
            elif value < minimum:
                message = f"{subject} should be greater than or equal to {go_float(minimum)}"
                self.add(path, INVALID, message, value)
        if maximum is not None:
            if node.get("exclusiveMaximum") is True and value >= maximum:
                self.add(path, INVALID, f"{subject} should be less than {go_float(maximum)}", value)
            elif value > maximum:
                message = f"{subject} should be less than or equal to {go_float(maximum)}"
                self.add(path, INVALID, message, value)
        factor = _number(node.get("multipleOf"))
        if factor is not None and factor > 0:
            quotient = value / factor
            if not math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9):
                message = f"{subject} should be a multiple of {go_float(factor)}"
                self.add(path, INVALID, message, value)

    def array(self, node: Schema, value: list[Any], path: str, old: Any) -> None:
        max_items, min_items = node.get("maxItems"), node.get("minItems")
        if isinstance(max_items, int) and len(value) > max_items:
            self.add(path, TOO_MANY, f"must have at most {max_items} items", len(value))
        if isinstance(min_items, int) and len(value) < min_items:
            message = f"{_subject(path)} should have at least {min_items} items"
            self.add(path, INVALID, message, len(value))
        self.list_type(node, value, path)
        items = _items(node)
        if items is None:
            return
        for index, item in enumerate(value):
            self.node(items, item, f"{path}[{index}]", _old_item(node, item, old))

    def list_type(self, node: Schema, value: list[Any], path: str) -> None:
        """x-kubernetes-list-type map and set reject duplicates (structurallisttype)."""
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set":
            seen: list[Any] = []
            for index, item in enumerate(value):
                if any(json_equal(item, s) for s in seen):
                    self.add(f"{path}[{index}]", DUPLICATE, "", item)
                seen.append(item)
        elif list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            seen_keys: set[str] = set()
            for index, item in enumerate(value):
                key = _list_map_key(node, item)
                if key is None:
                    continue
                if key in seen_keys:
                    duplicate = {k: item[k] for k in keys if k in item}
                    self.add(f"{path}[{index}]", DUPLICATE, "", duplicate)
                seen_keys.add(key)

    def object(
        self, node: Schema, value: Mapping[str, Any], path: str, old: Any, *, root: bool
    ) -> None:
        for name in node.get("required") or []:
            if name not in value:
                self.add(_join(path, name), REQUIRED, "")
        max_properties, min_properties = node.get("maxProperties"), node.get("minProperties")
        if isinstance(max_properties, int) and len(value) > max_properties:
            self.add(path, TOO_MANY, f"must have at most {max_properties} items", len(value))
        if isinstance(min_properties, int) and len(value) < min_properties:
            message = f"{_subject(path)} should have at least {min_properties} properties"
            self.add(path, INVALID, message, len(value))
        for key, item in value.items():
            child = _child_schema(node, key)
            if child is None:
                continue
            child_path = _join(path, key)
            if root and key == "metadata":
                if not isinstance(item, Mapping):
                    self.type_error(child_path, ["object"], _json_type(item))
                continue
            self.node(child, item, child_path, _old_child(old, key))

    def value_validations(self, node: Schema, value: Any, path: str) -> None:
        """allOf / anyOf / oneOf / not, which structural schemas allow without types."""
        for sub in node.get("allOf") or []:
            self.node(sub, value, path, MISSING)
        any_of = node.get("anyOf")
        # int-or-string's anyOf only restates its types, which are already checked.
        if (
            any_of
            and not node.get("x-kubernetes-int-or-string")
            and not any(self._passes(sub, value, path) for sub in any_of)
        ):
            message = f"{_subject(path)} must validate at least one schema (anyOf)"
            self.add(path, INVALID, message, value)
        one_of = node.get("oneOf")
        if one_of:
            passing = sum(1 for sub in one_of if self._passes(sub, value, path))
            if passing != 1:
                message = f"{_subject(path)} must validate one and only one schema (oneOf)"
                self.add(path, INVALID, message, value)
        negated = node.get("not")
        if isinstance(negated, Mapping) and self._passes(negated, value, path):
            self.add(path, INVALID, f"{_subject(path)} must not validate the schema (not)", value)

    @staticmethod
    def _passes(node: Schema, value: Any, path: str) -> bool:
        errors: list[FieldError] = []
        _Validator(errors).node(node, value, path, MISSING)
        return not errors


# ---------------------------------------------------------------------------
# CEL (x-kubernetes-validations).
# ---------------------------------------------------------------------------

_CEL_RESERVED: Final = frozenset(
    [
        *("true", "false", "null", "in", "as", "break", "const", "continue", "else", "for"),
        *("function", "if", "import", "let", "loop", "package", "namespace", "return"),
        *("var", "void", "while"),
    ]
)
_CEL_ACCESSIBLE_NAME = re.compile(r"^[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*$")
_OLD_SELF = re.compile(r"\boldSelf\b")


def _cel_property_name(name: str) -> str | None:
    """How CEL sees an object property: escaped as Kubernetes does, None if inaccessible."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    if not _CEL_ACCESSIBLE_NAME.match(name):
        return None
    return (
        name.replace("__", "__underscores__")
        .replace(".", "__dot__")
        .replace("-", "__dash__")
        .replace("/", "__slash__")
    )


def _cel_string(value: Any) -> Any:
    """CEL's string(): doubles print as cel-go does (1, 0.7, 1e+06)."""
    if isinstance(value, celtypes.DoubleType):
        return celtypes.StringType(go_float(float(value)))
    if isinstance(value, celtypes.BoolType):
        return celtypes.StringType("true" if value else "false")
    return celtypes.StringType(value)


def _cel_lower_ascii(text: Any) -> Any:
    return celtypes.StringType("".join(c.lower() if c.isascii() else c for c in str(text)))


def _cel_upper_ascii(text: Any) -> Any:
    return celtypes.StringType("".join(c.upper() if c.isascii() else c for c in str(text)))


def _cel_index_of(target: Any, needle: Any, *start: Any) -> Any:
    if isinstance(target, celtypes.ListType):
        return celtypes.IntType(next((i for i, v in enumerate(target) if v == needle), -1))
    return celtypes.IntType(str(target).find(str(needle), *(int(s) for s in start)))


def _cel_last_index_of(target: Any, needle: Any) -> Any:
    if isinstance(target, celtypes.ListType):
        found = [i for i, v in enumerate(target) if v == needle]
        return celtypes.IntType(found[-1] if found else -1)
    return celtypes.IntType(str(target).rfind(str(needle)))


def _cel_split(text: Any, separator: Any, *limit: Any) -> Any:
    count = int(limit[0]) if limit else -1
    if count == 0:
        return celtypes.ListType([])
    parts = str(text).split(str(separator), count - 1 if count > 0 else -1)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _cel_join(items: Any, *separator: Any) -> Any:
    return celtypes.StringType((str(separator[0]) if separator else "").join(map(str, items)))


def _cel_is_sorted(items: Any) -> Any:
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


def _cel_trim(text: Any) -> Any:
    return celtypes.StringType(str(text).strip())


def _cel_matches(text: Any, pattern: Any) -> Any:
    """matches() with RE2, like celpy's, but without RE2 logging bad patterns to stderr."""
    compiled, problem = _compile_pattern(str(pattern))
    if compiled is None:
        return CELEvalError("match error", re2.error, (problem,))
    return celtypes.BoolType(compiled.search(str(text)) is not None)


# Kubernetes' string() and matches(), and a few of its CEL extension functions (strings,
# lists), which celpy lacks.
_CEL_FUNCTIONS: Final = {
    "string": _cel_string,
    "matches": _cel_matches,
    "lowerAscii": _cel_lower_ascii,
    "upperAscii": _cel_upper_ascii,
    "indexOf": _cel_index_of,
    "lastIndexOf": _cel_last_index_of,
    "split": _cel_split,
    "join": _cel_join,
    "isSorted": _cel_is_sorted,
    "trim": _cel_trim,
}


@functools.cache
def _cel_environment() -> Any:
    return celpy.Environment()


_CEL_COMPILE_LOCK: Final = threading.Lock()


@functools.lru_cache(maxsize=4096)
def _compile_cel(expression: str) -> tuple[Any, str]:
    """(celpy program, "") or (None, why celpy cannot compile it); cached, as compiling
    is the slow part. The lock guards celpy's shared parser and Environment.
    """
    environment = _cel_environment()
    try:
        with _CEL_COMPILE_LOCK:
            tree = environment.compile(expression)
            return environment.program(tree, functions=_CEL_FUNCTIONS), ""
    except Exception as exc:  # celpy raises parse errors of several types
        return None, _short_cel_error(exc)


def _short_cel_error(exc: BaseException) -> str:
    """The first line of a celpy error (for a bad regexp, with RE2's reason)."""
    text = str(exc.args[0]) if exc.args else str(exc)
    text = text.split(" (in activation", 1)[0].strip()
    text = text.splitlines()[0] if text else repr(exc)
    detail = exc.args[2] if len(exc.args) > 2 else None
    if text == "match error" and isinstance(detail, tuple) and detail and detail[0]:
        first = detail[0].decode() if isinstance(detail[0], bytes) else str(detail[0])
        text = f"{text}: {first}"
    return text


class _CelError(Exception):
    """A CEL evaluation error: `genuine` when cel-go would fail the same way."""

    def __init__(self, message: str, *, genuine: bool) -> None:
        super().__init__(message)
        self.message = message
        self.genuine = genuine


def _classify_cel_error(exc: BaseException) -> _CelError:
    """Errors cel-go raises at runtime too, worded like cel-go; anything else is a gap of
    celpy (unknown function, missing overload) and must not count as a rule failure.
    """
    text = str(exc.args[0]) if exc.args else str(exc)
    missing = re.match(r"no such member in mapping: '(.*)'$", text)
    if missing:
        return _CelError(f"no such key: {missing.group(1)}", genuine=True)
    if "divide by zero" in text:
        return _CelError("division by zero", genuine=True)
    if text == "return error for overflow" and exc.args[2:] and "overflow" in str(exc.args[2]):
        return _CelError("integer overflow", genuine=True)
    if len(exc.args) > 1 and exc.args[1] is IndexError:
        return _CelError("index out of bounds", genuine=True)
    return _CelError(f"cannot evaluate it: {_short_cel_error(exc)}", genuine=False)


def _evaluate(expression: str, activation: Mapping[str, Any]) -> Any:
    program, problem = _compile_cel(expression)
    if program is None:
        raise _CelError(f"cannot compile it: {problem}", genuine=False)
    try:
        result = program.evaluate(dict(activation))
    except CELEvalError as exc:
        raise _classify_cel_error(exc) from None
    except Exception as exc:  # celpy internals raising on unsupported constructs
        raise _CelError(f"cannot evaluate it: {_short_cel_error(exc)}", genuine=False) from None
    if isinstance(result, CELEvalError):
        raise _classify_cel_error(result)
    return result


def _cel_value(node: Schema | None, value: Any, *, root: bool = False) -> Any:
    """A JSON value as Kubernetes' CEL sees it under `node`: integers stay ints, numbers
    are doubles, date-time/date strings timestamps, duration strings durations, byte
    strings bytes; objects with properties expose only those (escaped names), maps
    (additionalProperties) every key, and preserve-unknown objects nothing.
    """
    if node is None or value is None:
        return json_to_cel(value)
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if _is_number(value):
        return _cel_number(node, value)
    if isinstance(value, str):
        return _cel_string_value(node, value)
    if isinstance(value, list):
        items = _items(node)
        return celtypes.ListType([_cel_value(items, item) for item in value])
    if isinstance(value, Mapping):
        return _cel_object(node, value, root=root)
    return json_to_cel(value)


def _cel_number(node: Schema, value: float) -> Any:
    declared = _declared_types(node)
    if "number" in declared:
        return celtypes.DoubleType(float(value))
    if "integer" in declared and float(value).is_integer():
        return celtypes.IntType(int(value))
    return json_to_cel(value)


def _cel_string_value(node: Schema, value: str) -> Any:
    kind = node.get("format") if node.get("type") == "string" else None
    try:
        if kind in ("date-time", "datetime") and _is_date_time(value):
            return celtypes.TimestampType(value)
        if kind == "date" and _is_date(value):
            return celtypes.TimestampType(f"{value}T00:00:00Z")
        if kind == "duration" and _GO_DURATION.match(value):
            return celtypes.DurationType(value)
        if kind == "byte" and _is_byte(value):
            return celtypes.BytesType(base64.b64decode(value))
    except (ValueError, TypeError):
        pass  # celpy could not parse it: CEL sees the string
    return celtypes.StringType(value)


def _cel_object(node: Schema, value: Mapping[str, Any], *, root: bool) -> Any:
    properties = dict(_properties(node))
    embedded = root or node.get("x-kubernetes-embedded-resource") is True
    if embedded:
        # apiVersion, kind, metadata.name and metadata.generateName are implicit.
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
        properties["metadata"] = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
        }
    extra = _additional(node)
    converted: dict[Any, Any] = {}
    if properties or embedded:
        for key, item in value.items():
            name = _cel_property_name(key)
            if key in properties and name is not None:
                converted[celtypes.StringType(name)] = _cel_value(properties[key], item)
    elif extra is not None:
        for key, item in value.items():
            converted[celtypes.StringType(key)] = _cel_value(extra, item)
    # Anything else (preserve-unknown-fields, or no fields at all) shows no field.
    return celtypes.MapType(converted)


def _schema_type(node: Schema) -> str:
    declared = node.get("type")
    return declared if isinstance(declared, str) else ""


def _field_path_suffix(field_path: str) -> str:
    """A rule's fieldPath (`.a.b`, `['a.b']`, `.list[0]`) as a path suffix: `.a.b`."""
    out = []
    for match in re.finditer(r"\.([^.\[\]]+)|\['([^']*)'\]|\[\"([^\"]*)\"\]|\[(\d+)\]", field_path):
        name, single, double, index = match.groups()
        if index is not None:
            out.append(f"[{index}]")
        else:
            out.append("." + (name or single or double or ""))
    return "".join(out)


def _rule_path(path: str, rule: Mapping[str, Any]) -> str:
    suffix = _field_path_suffix(str(rule.get("fieldPath") or ""))
    return (path + suffix).lstrip(".") if suffix else path


def _rule_message(
    rule: Mapping[str, Any], activation: Mapping[str, Any], warnings: list[str], where: str
) -> str:
    """messageExpression's value, else `message`, else `failed rule: <rule>` (as k8s)."""
    expression = rule.get("messageExpression")
    if isinstance(expression, str) and expression:
        try:
            text = _evaluate(expression, activation)
        except _CelError as failure:
            if not failure.genuine:
                warnings.append(
                    f"x-kubernetes-validations messageExpression at {where} "
                    f"({expression!r}) was not used: devcluster's CEL engine (celpy) "
                    f"{failure.message}"
                )
            text = None
        if isinstance(text, str) and text.strip() and "\n" not in text:
            return str(text)
    message = rule.get("message")
    if isinstance(message, str) and message.strip():
        return message.strip()
    return f"failed rule: {str(rule.get('rule', '')).strip()}"


def _rule_error_string(rule: Mapping[str, Any]) -> str:
    message = rule.get("message")
    if isinstance(message, str) and message.strip():
        return message.strip()
    return str(rule.get("rule", "")).strip()


def evaluate_rules(
    schema: Schema, obj: Any, old_obj: Any = None, path: str = ""
) -> tuple[list[FieldError], list[str]]:
    """Evaluates every `x-kubernetes-validations` rule at every node of `obj` that exists
    (array items and map values too) and is not null; returns (errors, warnings).

    `self` is the node; `oldSelf` the node of `old_obj` on updates. Rules that mention
    `oldSelf` (transition rules) only run when the old node exists; on updates, rules
    without `oldSelf` skip nodes that did not change (ratcheting). A rule celpy cannot
    compile or evaluate is not enforced and produces a warning instead.
    """
    errors: list[FieldError] = []
    warnings: list[str] = []
    old = MISSING if old_obj is None else old_obj
    _RuleWalker(errors, warnings).node(schema, obj, old, path, root=not path)
    return errors, list(dict.fromkeys(warnings))


class _RuleWalker:
    def __init__(self, errors: list[FieldError], warnings: list[str]) -> None:
        self.errors = errors
        self.warnings = warnings

    def node(self, node: Schema, value: Any, old: Any, path: str, *, root: bool = False) -> None:
        if value is None:
            return  # Kubernetes does not evaluate rules on null values
        rules = node.get("x-kubernetes-validations") or []
        if rules:
            unchanged = old is not MISSING and json_equal(old, value)
            activation: dict[str, Any] = {"self": _cel_value(node, value, root=root)}
            if old is not MISSING and old is not None:
                activation["oldSelf"] = _cel_value(node, old, root=root)
            for rule in rules:
                self.rule(node, rule, activation, path, unchanged=unchanged)
        self.children(node, value, old, path, root=root)

    def rule(
        self,
        node: Schema,
        rule: Mapping[str, Any],
        activation: Mapping[str, Any],
        path: str,
        *,
        unchanged: bool,
    ) -> None:
        expression = str(rule.get("rule", ""))
        # Warnings name list items as [*] so that one rule gives one warning.
        where = re.sub(r"\[\d+\]", "[*]", path) or "the root"
        if _OLD_SELF.search(expression):
            if "oldSelf" not in activation:
                if rule.get("optionalOldSelf") is True:
                    self.warnings.append(
                        f"x-kubernetes-validations rule at {where} ({expression!r}) was not "
                        "enforced: devcluster's CEL engine (celpy) has no optional types "
                        "for optionalOldSelf"
                    )
                return  # a transition rule: only on update, when the old value exists
        elif unchanged:
            return  # ratcheting
        try:
            result = _evaluate(expression, activation)
        except _CelError as failure:
            if failure.genuine:
                message = f"{failure.message} evaluating rule: {_rule_error_string(rule)}"
                self.errors.append(FieldError(_field(path), INVALID, message, _schema_type(node)))
            else:
                self.warnings.append(
                    f"x-kubernetes-validations rule at {where} ({expression!r}) was not "
                    f"enforced: devcluster's CEL engine (celpy) {failure.message}"
                )
            return
        if not isinstance(result, celtypes.BoolType | bool):
            self.warnings.append(
                f"x-kubernetes-validations rule at {where} ({expression!r}) was not enforced: "
                f"it evaluated to {type(result).__name__}, not a bool"
            )
            return
        if not result:
            message = _rule_message(rule, activation, self.warnings, where)
            reason = str(rule.get("reason") or INVALID)
            self.errors.append(
                FieldError(_field(_rule_path(path, rule)), reason, message, _schema_type(node))
            )

    def children(self, node: Schema, value: Any, old: Any, path: str, *, root: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if root and key == "metadata":
                    continue
                child = _child_schema(node, key)
                if child is not None:
                    self.node(child, item, _old_child(old, key), _join(path, key))
        elif isinstance(value, list):
            items = _items(node)
            if items is not None:
                for index, item in enumerate(value):
                    self.node(items, item, _old_item(node, item, old), f"{path}[{index}]")


def _iter_rules(schema: Schema, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations") or []:
        if isinstance(rule, Mapping):
            yield path or "the root", rule
    for key, child in _properties(schema).items():
        if isinstance(child, Mapping):
            yield from _iter_rules(child, _join(path, key))
    if (items := _items(schema)) is not None:
        yield from _iter_rules(items, f"{path}[*]")
    if (extra := _additional(schema)) is not None:
        yield from _iter_rules(extra, _join(path, "*"))


def cel_compile_warnings(schema: Schema) -> list[str]:
    """Warnings for the rules (and messageExpressions) of a schema that celpy cannot
    compile, e.g. to return when the CRD is created; such rules will not be enforced.
    """
    warnings = []
    for where, rule in _iter_rules(schema):
        for name in ("rule", "messageExpression"):
            expression = rule.get(name)
            if isinstance(expression, str) and expression:
                _, problem = _compile_cel(expression)
                if problem:
                    warnings.append(
                        f"x-kubernetes-validations {name} at {where} ({expression!r}) will not "
                        f"be enforced: devcluster's CEL engine (celpy) cannot compile it: {problem}"
                    )
    return warnings


# ---------------------------------------------------------------------------
# Structural schema checks (CRD creation).
# ---------------------------------------------------------------------------

_TYPES: Final = ("array", "boolean", "integer", "number", "object", "string")
_FORBIDDEN_KEYWORDS: Final = (
    "$ref",
    "$schema",
    "id",
    "definitions",
    "patternProperties",
    "dependencies",
    "additionalItems",
)
_VALUE_VALIDATION_FORBIDDEN: Final = (
    "type",
    "default",
    "nullable",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
)
_RULE_REASONS: Final = (INVALID, FORBIDDEN, REQUIRED, DUPLICATE)
_INT_OR_STRING_ANY_OF: Final = [{"type": "integer"}, {"type": "string"}]


def structural_problems(schema: Any, path: str = "openAPIV3Schema") -> list[str]:
    """Why `schema` is not a valid structural schema, as `path: problem` lines; empty when
    it is one. kube-apiserver refuses such CRDs with 422 Invalid.
    """
    problems: list[str] = []
    if not isinstance(schema, Mapping):
        return [f"{path}: Invalid value: {field_error_value(schema)}: must be an object"]
    if schema.get("type") not in (None, "object"):
        declared = field_error_value(schema.get("type"))
        problems.append(f'{path}.type: Invalid value: {declared}: must be "object" at the root')
    _StructuralChecker(problems).node(schema, path, root=True)
    return problems


class _StructuralChecker:
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def add(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}")

    def node(
        self, node: Any, path: str, *, root: bool = False, value_validation: bool = False
    ) -> None:
        if not isinstance(node, Mapping):
            self.add(path, f"Invalid value: {field_error_value(node)}: must be a schema object")
            return
        for keyword in _FORBIDDEN_KEYWORDS:
            if keyword in node:
                self.add(f"{path}.{keyword}", "Forbidden: must not be used in a structural schema")
        if node.get("uniqueItems") is True:
            self.add(
                f"{path}.uniqueItems",
                "Forbidden: uniqueItems cannot be set to true since the runtime complexity "
                "becomes quadratic",
            )
        if value_validation:
            self.value_validation_node(node, path)
        else:
            self.structural_node(node, path, root=root)
        self.pattern(node, path)
        for key in ("allOf", "anyOf", "oneOf"):
            members = node.get(key)
            if members is None:
                continue
            if not isinstance(members, list):
                self.add(f"{path}.{key}", "Invalid value: must be a list of schemas")
                continue
            for index, member in enumerate(members):
                self.node(member, f"{path}.{key}[{index}]", value_validation=True)
        if "not" in node:
            self.node(node["not"], f"{path}.not", value_validation=True)
        for key, child in _properties(node).items():
            self.node(child, f"{path}.properties[{key}]", value_validation=value_validation)
        if "items" in node:
            if isinstance(node["items"], list):
                self.add(
                    f"{path}.items", "Forbidden: items must be a schema object and not an array"
                )
            else:
                self.node(node["items"], f"{path}.items", value_validation=value_validation)
        if isinstance(node.get("additionalProperties"), Mapping):
            self.node(
                node["additionalProperties"],
                f"{path}.additionalProperties",
                value_validation=value_validation,
            )

    def structural_node(self, node: Schema, path: str, *, root: bool) -> None:
        declared = node.get("type")
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        if declared is None or declared == "":
            if not int_or_string and preserve is not True:
                self.add(
                    f"{path}.type", "Required value: must not be empty for specified object fields"
                )
        elif declared not in _TYPES:
            supported = ", ".join(f'"{t}"' for t in _TYPES)
            self.add(
                f"{path}.type",
                f"Unsupported value: {field_error_value(declared)}: supported values: {supported}",
            )
        if int_or_string:
            if declared:
                self.add(
                    f"{path}.type",
                    f"Invalid value: {field_error_value(declared)}: must be empty if "
                    "x-kubernetes-int-or-string is true",
                )
            any_of = node.get("anyOf")
            if any_of is not None and not json_equal(any_of, _INT_OR_STRING_ANY_OF):
                self.add(
                    f"{path}.anyOf",
                    "Forbidden: must be [{type: integer}, {type: string}] or empty if "
                    "x-kubernetes-int-or-string is true",
                )
        if preserve is not None and preserve is not True:
            self.add(
                f"{path}.x-kubernetes-preserve-unknown-fields",
                f"Invalid value: {field_error_value(preserve)}: must be true or undefined",
            )
        if preserve is True and declared not in (None, "", "object"):
            self.add(
                f"{path}.type",
                f"Invalid value: {field_error_value(declared)}: must be object if "
                "x-kubernetes-preserve-unknown-fields is true",
            )
        self.object_shape(node, path, declared)
        self.array_shape(node, path, declared)
        self.embedded(node, path, declared)
        self.defaults(node, path, root=root)
        self.rules(node, path)

    def object_shape(self, node: Schema, path: str, declared: Any) -> None:
        extra = node.get("additionalProperties")
        if "properties" in node and extra is not None:
            self.add(
                f"{path}.additionalProperties",
                "Forbidden: additionalProperties and properties are mutual exclusive",
            )
        if extra is False:
            self.add(
                f"{path}.additionalProperties",
                "Forbidden: additionalProperties: false is not allowed in a structural schema "
                "(unknown fields are pruned)",
            )
        if declared not in (None, "", "object"):
            for key in ("properties", "additionalProperties", "required"):
                if key in node:
                    self.add(f"{path}.{key}", f'Forbidden: must be empty for type "{declared}"')

    def array_shape(self, node: Schema, path: str, declared: Any) -> None:
        if declared == "array" and "items" not in node:
            self.add(f"{path}.items", "Required value: must be specified")
        list_type = node.get("x-kubernetes-list-type")
        map_keys = node.get("x-kubernetes-list-map-keys")
        if list_type is not None and list_type not in ("atomic", "set", "map"):
            self.add(
                f"{path}.x-kubernetes-list-type",
                f"Unsupported value: {field_error_value(list_type)}: "
                'supported values: "atomic", "set", "map"',
            )
        if list_type is not None and declared != "array":
            self.add(
                f"{path}.x-kubernetes-list-type",
                "Invalid value: must only be used if type is array",
            )
        if map_keys is not None and list_type != "map":
            self.add(
                f"{path}.x-kubernetes-list-map-keys",
                'Forbidden: must only be used if x-kubernetes-list-type is "map"',
            )
        items = _items(node) or {}
        if list_type == "map":
            self.list_map(items, map_keys, path)
        if (
            list_type == "set"
            and items.get("type") in ("object", "array")
            and items.get("x-kubernetes-map-type") != "atomic"
        ):
            self.add(
                f"{path}.items.type",
                "Invalid value: must be a scalar (or an atomic map) for "
                'x-kubernetes-list-type "set"',
            )

    def list_map(self, items: Schema, map_keys: Any, path: str) -> None:
        if items.get("type") != "object":
            self.add(
                f"{path}.items.type",
                'Invalid value: must be object for x-kubernetes-list-type "map"',
            )
        if not isinstance(map_keys, list) or not map_keys:
            self.add(
                f"{path}.x-kubernetes-list-map-keys",
                'Required value: must not be empty if x-kubernetes-list-type is "map"',
            )
            return
        properties = _properties(items)
        required = items.get("required") or []
        for key in map_keys:
            prop = properties.get(key)
            if prop is None:
                self.add(
                    f"{path}.x-kubernetes-list-map-keys",
                    f'Invalid value: "{key}": entries must all be names of item properties',
                )
            elif prop.get("type") not in (
                "string",
                "integer",
                "number",
                "boolean",
            ) and not prop.get("x-kubernetes-int-or-string"):
                self.add(
                    f"{path}.items.properties[{key}].type",
                    "Invalid value: must be a scalar type if used as a list map key",
                )
            elif key not in required and "default" not in prop:
                self.add(
                    f"{path}.items.properties[{key}]",
                    "Required value: list map keys must be required or have a default value",
                )

    def embedded(self, node: Schema, path: str, declared: Any) -> None:
        if node.get("x-kubernetes-embedded-resource") is not True:
            return
        if declared != "object":
            self.add(
                f"{path}.type",
                "Invalid value: must be object if x-kubernetes-embedded-resource is true",
            )
        if "properties" not in node and not _preserves_unknown(node):
            self.add(
                f"{path}.properties",
                "Required value: must not be empty if x-kubernetes-embedded-resource is true "
                "without x-kubernetes-preserve-unknown-fields",
            )

    def defaults(self, node: Schema, path: str, *, root: bool) -> None:
        """Defaults must survive pruning and validate, as the API server checks."""
        if root and "default" in node:
            self.add(f"{path}.default", "Forbidden: must not be set at the root")
        if "default" not in node:
            return
        removed: list[str] = []
        pruned = _prune(node, copy.deepcopy(node["default"]), "default", removed, root=False)
        for field_path in removed:
            self.add(f"{path}.default", f'Forbidden: unknown field "{field_path}"')
        for error in validate(node, pruned, path="default"):
            self.add(f"{path}.default", error.body())

    def rules(self, node: Schema, path: str) -> None:
        rules = node.get("x-kubernetes-validations")
        if rules is None:
            return
        if not isinstance(rules, list):
            self.add(f"{path}.x-kubernetes-validations", "Invalid value: must be a list of rules")
            return
        for index, rule in enumerate(rules):
            where = f"{path}.x-kubernetes-validations[{index}]"
            if not isinstance(rule, Mapping) or not str(rule.get("rule") or "").strip():
                self.add(f"{where}.rule", "Required value: rule is not specified")
                continue
            reason = rule.get("reason")
            if reason is not None and reason not in _RULE_REASONS:
                supported = ", ".join(f'"{r}"' for r in _RULE_REASONS)
                self.add(
                    f"{where}.reason",
                    f"Unsupported value: {field_error_value(reason)}: "
                    f"supported values: {supported}",
                )
            field_path = rule.get("fieldPath")
            if field_path and (
                not isinstance(field_path, str) or _field_path_suffix(field_path) == ""
            ):
                self.add(
                    f"{where}.fieldPath",
                    f"Invalid value: {field_error_value(field_path)}: must be a valid "
                    "relative JSON path, e.g. .spec.x or ['x.y']",
                )

    def value_validation_node(self, node: Schema, path: str) -> None:
        for keyword in _VALUE_VALIDATION_FORBIDDEN:
            if keyword in node and not (
                keyword == "type"
                and node.get("type") in ("integer", "string")
                and set(node) == {"type"}
            ):
                self.add(
                    f"{path}.{keyword}",
                    "Forbidden: must not be used inside value validations "
                    "(allOf, anyOf, oneOf, not)",
                )

    def pattern(self, node: Schema, path: str) -> None:
        pattern = node.get("pattern")
        if pattern is None:
            return
        if not isinstance(pattern, str):
            self.add(
                f"{path}.pattern", f"Invalid value: {field_error_value(pattern)}: must be a string"
            )
            return
        _, problem = _compile_pattern(pattern)
        if problem:
            self.add(
                f"{path}.pattern",
                f"Invalid value: {field_error_value(pattern)}: must be a valid regular expression, "
                f"but isn't: {problem}",
            )


# ---------------------------------------------------------------------------
# Admission.
# ---------------------------------------------------------------------------


@dataclass
class AdmissionResult:
    """What `admit` made of an object.

    `obj` is the object to store (nulls dropped, pruned, defaulted); `errors` the
    validation errors (a 422 Invalid if any); `warnings` the texts for the response's
    `Warning` headers (unknown fields, rules devcluster could not evaluate);
    `unknown_fields` the pruned paths.
    """

    obj: Any
    errors: list[FieldError]
    warnings: list[str]
    unknown_fields: list[str] = field(default_factory=list)
    strict: bool = False

    @property
    def strict_decoding_error(self) -> str | None:
        """With fieldValidation=Strict and unknown fields, the message of the 400
        BadRequest Kubernetes answers instead of a 422.
        """
        if not (self.strict and self.unknown_fields):
            return None
        return "strict decoding error: " + ", ".join(
            f'unknown field "{path}"' for path in self.unknown_fields
        )


def admit(schema: Schema, obj: Any, old_obj: Any = None, strict: bool = False) -> AdmissionResult:
    """Admits a custom resource as kube-apiserver does: drop nulls, prune (unknown fields
    become warnings, or with `strict` errors), default, validate and evaluate the CEL
    rules (skipped, with a note, after a blocking schema error).
    """
    cleaned = drop_nulls(schema, obj)
    pruned, unknown = prune(schema, cleaned)
    warnings: list[str] = []
    errors: list[FieldError] = []
    for path in unknown:
        if strict:
            errors.append(FieldError(_field(path), FORBIDDEN, f'unknown field "{path}"'))
        else:
            warnings.append(f'unknown field "{path}"')
    admitted = _normalize_integers(schema, apply_defaults(schema, pruned))
    schema_errors = validate(schema, admitted, old_obj=old_obj)
    errors.extend(schema_errors)
    if any(error.reason in BLOCKING_REASONS for error in schema_errors):
        errors.append(FieldError(ROOT_FIELD, INVALID, NOT_ALL_RULES_CHECKED, None))
    else:
        rule_errors, rule_warnings = evaluate_rules(schema, admitted, old_obj)
        errors.extend(rule_errors)
        warnings.extend(rule_warnings)
    return AdmissionResult(admitted, errors, warnings, unknown, strict)
