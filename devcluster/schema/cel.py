"""CEL rules (`x-kubernetes-validations`): compiled and evaluated with celpy, with
Kubernetes' extension functions and error messages.
"""

from __future__ import annotations

import base64
import functools
import itertools
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final

import celpy
import re2
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from devcluster.gofmt import go_float
from devcluster.patch import json_equal
from devcluster.schema.common import (
    INVALID,
    MISSING,
    FieldError,
    Schema,
    additional,
    child_schema,
    declared_types,
    error_field,
    is_number,
    items_of,
    join_path,
    old_child,
    old_list_item,
    properties_of,
)
from devcluster.schema.validation import (
    GO_DURATION,
    compile_pattern,
    is_byte,
    is_date,
    is_date_time,
)

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
    compiled, problem = compile_pattern(str(pattern))
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
    if is_number(value):
        return _cel_number(node, value)
    if isinstance(value, str):
        return _cel_string_value(node, value)
    if isinstance(value, list):
        items = items_of(node)
        return celtypes.ListType([_cel_value(items, item) for item in value])
    if isinstance(value, Mapping):
        return _cel_object(node, value, root=root)
    return json_to_cel(value)


def _cel_number(node: Schema, value: float) -> Any:
    declared = declared_types(node)
    if "number" in declared:
        return celtypes.DoubleType(float(value))
    if "integer" in declared and float(value).is_integer():
        return celtypes.IntType(int(value))
    return json_to_cel(value)


def _cel_string_value(node: Schema, value: str) -> Any:
    kind = node.get("format") if node.get("type") == "string" else None
    try:
        if kind in ("date-time", "datetime") and is_date_time(value):
            return celtypes.TimestampType(value)
        if kind == "date" and is_date(value):
            return celtypes.TimestampType(f"{value}T00:00:00Z")
        if kind == "duration" and GO_DURATION.match(value):
            return celtypes.DurationType(value)
        if kind == "byte" and is_byte(value):
            return celtypes.BytesType(base64.b64decode(value))
    except (ValueError, TypeError):
        pass  # celpy could not parse it: CEL sees the string
    return celtypes.StringType(value)


def _cel_object(node: Schema, value: Mapping[str, Any], *, root: bool) -> Any:
    properties = dict(properties_of(node))
    embedded = root or node.get("x-kubernetes-embedded-resource") is True
    if embedded:
        # apiVersion, kind, metadata.name and metadata.generateName are implicit.
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
        properties["metadata"] = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
        }
    extra = additional(node)
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


def field_path_suffix(field_path: str) -> str:
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
    suffix = field_path_suffix(str(rule.get("fieldPath") or ""))
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
                self.errors.append(
                    FieldError(error_field(path), INVALID, message, _schema_type(node))
                )
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
                FieldError(error_field(_rule_path(path, rule)), reason, message, _schema_type(node))
            )

    def children(self, node: Schema, value: Any, old: Any, path: str, *, root: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if root and key == "metadata":
                    continue
                child = child_schema(node, key)
                if child is not None:
                    self.node(child, item, old_child(old, key), join_path(path, key))
        elif isinstance(value, list):
            items = items_of(node)
            if items is not None:
                for index, item in enumerate(value):
                    self.node(items, item, old_list_item(node, item, old), f"{path}[{index}]")


def _iter_rules(schema: Schema, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations") or []:
        if isinstance(rule, Mapping):
            yield path or "the root", rule
    for key, child in properties_of(schema).items():
        if isinstance(child, Mapping):
            yield from _iter_rules(child, join_path(path, key))
    if (items := items_of(schema)) is not None:
        yield from _iter_rules(items, f"{path}[*]")
    if (extra := additional(schema)) is not None:
        yield from _iter_rules(extra, join_path(path, "*"))


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
