"""OpenAPI v3 validation of a custom resource (types, bounds, patterns, formats, list
and map semantics), ratcheting on updates.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import re2

from devcluster.gofmt import go_float
from devcluster.patch import json_equal
from devcluster.schema.common import (
    DUPLICATE,
    INVALID,
    MISSING,
    NOT_SUPPORTED,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    TYPE_INVALID,
    FieldError,
    Schema,
    child_schema,
    declared_types,
    error_field,
    is_number,
    items_of,
    join_path,
    json_type,
    list_map_key,
    number_keyword,
    old_child,
    old_list_item,
    subject_of,
    type_matches,
)

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are reported, not logged to stderr


@functools.lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> tuple[Any, str]:
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
GO_DURATION = re.compile(r"^[-+]?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)$")
_WORD_DURATION = re.compile(
    r"^\s*(\d+\s*(ns|us|µs|ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs"
    r"|hour|hours|d|day|days|w|wk|wks|week|weeks)\s*)+$"
)


def is_date(text: str) -> bool:
    match = _DATE.match(text)
    if not match:
        return False
    year, month, day = (int(part) for part in match.groups())
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31]
    days += [30, 31, 31, 30, 31, 30, 31]
    return 1 <= month <= 12 and 1 <= day <= days[month - 1]


def is_date_time(text: str) -> bool:
    """strfmt.IsDateTime: an RFC 3339 date, `T`, then hh:mm:ss[.frac](Z|±hh:mm)."""
    parts = text.lower().split("t")
    if len(text) < 4 or len(parts) < 2 or not is_date(parts[0]):
        return False
    match = _DATE_TIME_TAIL.match(parts[1])
    if match is None:
        return False
    hours, minutes, seconds = match.group(1, 2, 3)
    return hours <= "23" and minutes <= "59" and seconds <= "59"


def is_byte(text: str) -> bool:
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
    "date-time": is_date_time,
    "datetime": is_date_time,
    "date": is_date,
    "duration": lambda s: bool(GO_DURATION.match(s) or _WORD_DURATION.match(s)),
    "byte": is_byte,
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
        self.errors.append(FieldError(error_field(path), reason, message, value))

    def node(self, node: Schema, value: Any, path: str, old: Any, *, root: bool = False) -> None:
        if old is not MISSING and json_equal(old, value):
            return  # unchanged on update: ratcheted
        declared = declared_types(node)
        if value is None:
            if declared and not node.get("nullable"):
                self.type_error(path, declared, "null")
            return
        if declared and not type_matches(value, declared):
            self.type_error(path, declared, json_type(value))
            return
        self.enum(node, value, path)
        if isinstance(value, str):
            self.string(node, value, path)
        elif is_number(value):
            self.number(node, value, path)
        elif isinstance(value, list):
            self.array(node, value, path, old)
        elif isinstance(value, Mapping):
            self.object(node, value, path, old, root=root)
        self.value_validations(node, value, path)

    def type_error(self, path: str, declared: list[str], actual: str) -> None:
        types = ",".join(declared)
        message = f'{subject_of(path)} must be of type {types}: "{actual}"'
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
            message = f"{subject_of(path)} should be at least {node['minLength']} chars long"
            self.add(path, INVALID, message, value)
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            compiled, problem = compile_pattern(pattern)
            if compiled is None:
                message = f"the schema's pattern '{pattern}' is not a valid RE2 regexp: {problem}"
                self.add(path, INVALID, message, value)
            elif not compiled.search(value):
                self.add(path, INVALID, f"{subject_of(path)} should match '{pattern}'", value)
        checker = _FORMATS.get(str(node.get("format")))
        if checker is not None and not checker(value):
            quoted = json.dumps(value, ensure_ascii=False)
            message = f"{subject_of(path)} must be of type {node['format']}: {quoted}"
            self.add(path, TYPE_INVALID, message, value)

    def number(self, node: Schema, value: float, path: str) -> None:
        subject = subject_of(path)
        minimum, maximum = number_keyword(node.get("minimum")), number_keyword(node.get("maximum"))
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
        factor = number_keyword(node.get("multipleOf"))
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
            message = f"{subject_of(path)} should have at least {min_items} items"
            self.add(path, INVALID, message, len(value))
        self.list_type(node, value, path)
        items = items_of(node)
        if items is None:
            return
        for index, item in enumerate(value):
            self.node(items, item, f"{path}[{index}]", old_list_item(node, item, old))

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
                key = list_map_key(node, item)
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
                self.add(join_path(path, name), REQUIRED, "")
        max_properties, min_properties = node.get("maxProperties"), node.get("minProperties")
        if isinstance(max_properties, int) and len(value) > max_properties:
            self.add(path, TOO_MANY, f"must have at most {max_properties} items", len(value))
        if isinstance(min_properties, int) and len(value) < min_properties:
            message = f"{subject_of(path)} should have at least {min_properties} properties"
            self.add(path, INVALID, message, len(value))
        for key, item in value.items():
            child = child_schema(node, key)
            if child is None:
                continue
            child_path = join_path(path, key)
            if root and key == "metadata":
                if not isinstance(item, Mapping):
                    self.type_error(child_path, ["object"], json_type(item))
                continue
            self.node(child, item, child_path, old_child(old, key))

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
            message = f"{subject_of(path)} must validate at least one schema (anyOf)"
            self.add(path, INVALID, message, value)
        one_of = node.get("oneOf")
        if one_of:
            passing = sum(1 for sub in one_of if self._passes(sub, value, path))
            if passing != 1:
                message = f"{subject_of(path)} must validate one and only one schema (oneOf)"
                self.add(path, INVALID, message, value)
        negated = node.get("not")
        if isinstance(negated, Mapping) and self._passes(negated, value, path):
            self.add(path, INVALID, f"{subject_of(path)} must not validate the schema (not)", value)

    @staticmethod
    def _passes(node: Schema, value: Any, path: str) -> bool:
        errors: list[FieldError] = []
        _Validator(errors).node(node, value, path, MISSING)
        return not errors
