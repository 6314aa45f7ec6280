"""What the schema modules share: error reasons, `FieldError`, field paths and
reads of schema nodes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from devcluster.gofmt import field_error_value

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
ROOT_FIELDS: Final = ("apiVersion", "kind", "metadata")


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


def error_field(path: str) -> str:
    return path or ROOT_FIELD


def subject_of(path: str) -> str:
    """How kube-openapi names a value in its messages: `spec.replicas in body`."""
    return f"{path} in body" if path else "body"


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------
# Schema helpers.
# ---------------------------------------------------------------------------


def properties_of(node: Schema) -> Mapping[str, Schema]:
    properties = node.get("properties")
    return properties if isinstance(properties, Mapping) else {}


def additional(node: Schema) -> Schema | None:
    """The schema of additionalProperties values, when it is a schema."""
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def items_of(node: Schema) -> Schema | None:
    items = node.get("items")
    return items if isinstance(items, Mapping) else None


def preserves_unknown(node: Schema) -> bool:
    return node.get("x-kubernetes-preserve-unknown-fields") is True


def child_schema(node: Schema, key: str) -> Schema | None:
    """The schema of the value at `key` of an object node, if it has one."""
    properties = properties_of(node)
    if key in properties:
        return properties[key]
    return additional(node)


def declared_types(node: Schema) -> list[str]:
    if node.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    declared = node.get("type")
    return [declared] if isinstance(declared, str) and declared else []


def json_type(value: Any) -> str:
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


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number_keyword(value: Any) -> float | None:
    """A schema's numeric keyword (minimum, ...), or None when absent or not a number."""
    return value if is_number(value) else None


def type_matches(value: Any, declared: list[str]) -> bool:
    actual = json_type(value)
    if actual in declared:
        return True
    if actual == "integer" and "number" in declared:
        return True
    # kube-openapi's isFloatInt: 2.0 is an integer.
    return actual == "number" and "integer" in declared and float(value).is_integer()


def old_child(old: Any, key: str) -> Any:
    return old[key] if isinstance(old, Mapping) and key in old else MISSING


def list_map_key(node: Schema, item: Any) -> str | None:
    """A comparable key of a list-type=map item (defaults fill missing key fields)."""
    if not isinstance(item, Mapping):
        return None
    item_schema = items_of(node) or {}
    key_values = []
    for name in node.get("x-kubernetes-list-map-keys") or []:
        if name in item:
            key_values.append(item[name])
        else:
            key_values.append(properties_of(item_schema).get(name, {}).get("default", MISSING))
    return json.dumps(key_values, sort_keys=True, default=repr)


def old_list_item(node: Schema, item: Any, old_list: Any) -> Any:
    """The old value of a list item: only list-type=map items are correlated (by key)."""
    if node.get("x-kubernetes-list-type") != "map" or not isinstance(old_list, list):
        return MISSING
    key = list_map_key(node, item)
    for old_item in old_list:
        if key is not None and list_map_key(node, old_item) == key:
            return old_item
    return MISSING
