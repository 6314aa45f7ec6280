"""What the Kubernetes API server does with our CRD schemas, re-enacted for tests.

The API server handles a custom resource in this order: it prunes nulls, applies the
schema's defaults, validates the object against the OpenAPI v3 schema and then
evaluates every `x-kubernetes-validations` CEL rule at every node of the object that
exists. These helpers do the same, with celpy standing in for cel-go, so tests can
compare what the API server would say about a manifest with what the pydantic models
say about it.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import celpy
import jsonschema
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from jsonschema import Draft4Validator

from lmoperator.api.crd import RESOURCE_KINDS
from tests.crds import project_crds

Schema = dict[str, Any]

# ---------------------------------------------------------------------------
# The CRDs as kubectl would apply them (through YAML, exactly as committed).
# ---------------------------------------------------------------------------


@functools.cache
def _crds() -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in project_crds()}


def crd(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition of `kind` (LMTrainingJob or LMService); a fresh copy."""
    return copy.deepcopy(_crds()[kind])


def openapi_schema(kind: str) -> Schema:
    """The openAPIV3Schema of the (single) version of `kind`'s CRD; a fresh copy."""
    schema: Schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def kinds() -> list[str]:
    return [r.kind for r in RESOURCE_KINDS]


# ---------------------------------------------------------------------------
# Walking schemas.
# ---------------------------------------------------------------------------


def join_path(path: str, key: str) -> str:
    """Paths as lmoperator.api.errors.field_path writes them: spec.worker.env[0].name."""
    return f"{path}.{key}" if path else key


def iter_schema_nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """(path, node) for every node of a schema, the root included.

    Properties are joined with '.', array items are `[*]` and additionalProperties
    values are `.*`, e.g. `spec.worker.env[*].valueFrom`, `spec.worker.resources.limits.*`.
    Members of an `anyOf` are yielded with the path `<path>|anyOf[i]`.
    """
    yield path, schema
    for key, prop in (schema.get("properties") or {}).items():
        yield from iter_schema_nodes(prop, join_path(path, key))
    if isinstance(schema.get("items"), dict):
        yield from iter_schema_nodes(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_schema_nodes(schema["additionalProperties"], join_path(path, "*"))
    for index, member in enumerate(schema.get("anyOf") or []):
        yield from iter_schema_nodes(member, f"{path}|anyOf[{index}]")


def cel_rules_at(schema: Schema) -> Iterator[tuple[str, Schema, dict[str, Any]]]:
    """(json path of the node, node, rule) for every `x-kubernetes-validations` rule."""
    for path, node in iter_schema_nodes(schema):
        for rule in node.get("x-kubernetes-validations") or []:
            yield path, node, rule


def schema_at(schema: Schema, path: str) -> Schema | None:
    """The node at a path written as iter_schema_nodes writes it, or None."""
    node: Schema | None = schema
    for part in re.findall(r"[^.\[\]]+|\[\*\]", path):
        if node is None:
            return None
        if part == "[*]":
            node = node.get("items")
        elif part in (node.get("properties") or {}):
            node = node["properties"][part]
        elif part == "*" and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


# ---------------------------------------------------------------------------
# Defaulting (k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting).
# ---------------------------------------------------------------------------


def prune_nulls(schema: Schema, obj: Any) -> Any:
    """Drops `null` values of non-nullable fields, as the API server does before defaulting."""
    if isinstance(obj, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        result = {}
        for key, value in obj.items():
            sub = properties.get(key) or (extra if isinstance(extra, dict) else None)
            if value is None and sub is not None and not sub.get("nullable"):
                continue
            result[key] = prune_nulls(sub, value) if sub is not None else value
        return result
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune_nulls(schema["items"], item) for item in obj]
    return obj


def apply_defaults(schema: Schema, obj: Any) -> Any:
    """A defaulted deep copy of `obj`, as Kubernetes structural defaulting builds it.

    For every object node, each missing property with a `default` gets a deep copy of
    that default, which is then defaulted itself; defaulting recurses into every
    property that exists, into array items and into additionalProperties values.
    Nulls of non-nullable fields are pruned first, so a `null` also gets the default.
    """
    obj = prune_nulls(schema, copy.deepcopy(obj))
    _default_in_place(schema, obj)
    return obj


def _default_in_place(schema: Schema | None, obj: Any) -> None:
    if schema is None:
        return
    if isinstance(obj, dict):
        properties = schema.get("properties") or {}
        for key, prop in properties.items():
            if "default" in prop and key not in obj:
                obj[key] = copy.deepcopy(prop["default"])
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if key in properties:
                _default_in_place(properties[key], value)
            elif isinstance(extra, dict):
                _default_in_place(extra, value)
    elif isinstance(obj, list):
        items = schema.get("items")
        for value in obj:
            _default_in_place(items if isinstance(items, dict) else None, value)


# ---------------------------------------------------------------------------
# CEL.
# ---------------------------------------------------------------------------

_ENV = celpy.Environment()


class CelEvaluationError(Exception):
    """A rule or messageExpression that cel-go would fail to evaluate too."""


@functools.cache
def compile_cel(expression: str) -> Any:
    """The celpy program of an expression (compiled once); raises on a syntax error."""
    return _ENV.program(_ENV.compile(expression))


def to_cel(value: Any, schema: Schema | None = None) -> Any:
    """A JSON value as CEL sees it under `schema`: `integer` stays an int, `number`
    becomes a double (even when written as 4), objects become maps.
    """
    if schema is None:
        return json_to_cel(value)
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float) and schema.get("type") == "number":
        return celtypes.DoubleType(float(value))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        converted: dict[Any, Any] = {}
        for key, item in value.items():
            sub = properties.get(key) or (extra if isinstance(extra, dict) else None)
            converted[celtypes.StringType(key)] = to_cel(item, sub)
        return celtypes.MapType(converted)
    if isinstance(value, list):
        items = schema.get("items")
        return celtypes.ListType(
            [to_cel(item, items if isinstance(items, dict) else None) for item in value]
        )
    return json_to_cel(value)


def evaluate_cel(expression: str, self_value: Any, schema: Schema | None = None) -> Any:
    """Evaluates a CEL expression with `self` bound to `self_value` (typed by `schema`).

    Returns the CEL value (celtypes subclass bool, int, float, str, ...); raises
    CelEvaluationError when the evaluation fails (a missing field, a bad type, ...).
    """
    program = compile_cel(expression)
    try:
        return program.evaluate({"self": to_cel(self_value, schema)})
    except CELEvalError as exc:
        raise CelEvaluationError(f"{expression!r}: {exc.args[0] if exc.args else exc}") from exc


def rule_message(rule: Mapping[str, Any], self_value: Any, schema: Schema | None) -> str:
    """The message the API server shows for a failed rule: its messageExpression, or
    `message` when the expression fails or yields an empty string.
    """
    expression = rule.get("messageExpression")
    if expression:
        try:
            text = evaluate_cel(expression, self_value, schema)
        except CelEvaluationError:
            text = ""
        if isinstance(text, str) and text.strip():
            return str(text)
    return str(rule.get("message") or f"failed rule: {rule['rule']}")


def rule_holds(rule: Mapping[str, Any], self_value: Any, schema: Schema | None) -> bool:
    """Whether a rule holds; an evaluation error counts as a violation, as in cel-go."""
    try:
        result = evaluate_cel(rule["rule"], self_value, schema)
    except CelEvaluationError:
        return False
    return isinstance(result, bool | celtypes.BoolType) and bool(result)


def cel_failures(schema: Schema, obj: Any, *, defaulted: bool = False) -> list[tuple[str, str]]:
    """(field path, message) for every CEL rule that fails on `obj`, as the API server
    reports them: every rule of every node of the object that exists, array items and
    map values included, evaluated after defaulting (unless `defaulted` says `obj` is).

    The path is the node's path plus the rule's fieldPath (`spec.data` + `.path`).
    A rule that cannot be evaluated is a failure with a message that says so.
    """
    if not defaulted:
        obj = apply_defaults(schema, obj)
    failures: list[tuple[str, str]] = []
    _collect_failures(schema, obj, "", failures)
    return failures


def _collect_failures(
    schema: Schema | None, obj: Any, path: str, failures: list[tuple[str, str]]
) -> None:
    if schema is None:
        return
    for rule in schema.get("x-kubernetes-validations") or []:
        try:
            result = evaluate_cel(rule["rule"], obj, schema)
        except CelEvaluationError as exc:
            failures.append((path, f"CEL rule could not be evaluated: {exc}"))
            continue
        if not (isinstance(result, bool | celtypes.BoolType) and bool(result)):
            where = path + str(rule.get("fieldPath") or "")
            failures.append((where, rule_message(rule, obj, schema)))
    if isinstance(obj, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if key in properties:
                _collect_failures(properties[key], value, join_path(path, key), failures)
            elif isinstance(extra, dict):
                _collect_failures(extra, value, join_path(path, key), failures)
    elif isinstance(obj, list):
        items = schema.get("items")
        for index, value in enumerate(obj):
            _collect_failures(
                items if isinstance(items, dict) else None, value, f"{path}[{index}]", failures
            )


def describe_cel_failure(path: str, message: str) -> str:
    """One CEL failure as lmoperator.api.errors.describe_validation_error words it."""
    return message if not path or message.startswith(path) else f"{path}: {message}"


def cel_problems(schema: Schema, obj: Any) -> list[str]:
    """The problems the API server's CEL rules find in a manifest, worded like the model's."""
    return [describe_cel_failure(path, message) for path, message in cel_failures(schema, obj)]


# ---------------------------------------------------------------------------
# OpenAPI v3 validation.
# ---------------------------------------------------------------------------


def _list_type(validator: Any, list_type: str, instance: Any, schema: Schema) -> Iterator[Any]:
    """x-kubernetes-list-type: map and set lists reject duplicates, as the API server does."""
    if not isinstance(instance, list):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: set[tuple[str, ...]] = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(
                    f"duplicate entry with {dict(zip(keys, key, strict=True))} in a list-type map"
                )
            seen.add(key)
    elif list_type == "set":
        seen_items: list[Any] = []
        for item in instance:
            if item in seen_items:
                yield jsonschema.ValidationError(f"duplicate entry {item!r} in a list-type set")
            seen_items.append(item)


_KubernetesValidator = jsonschema.validators.extend(
    Draft4Validator, validators={"x-kubernetes-list-type": _list_type}
)


def _to_draft4(schema: Schema) -> Schema:
    """The OpenAPI schema as a draft-4 JSON schema, with Kubernetes' extensions applied."""
    out: Schema = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: _to_draft4(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _to_draft4(value)
        elif key == "anyOf":
            out[key] = [_to_draft4(v) for v in value]
        elif key in ("x-kubernetes-list-type", "x-kubernetes-list-map-keys"):
            out[key] = value  # enforced by _list_type
        elif key.startswith("x-kubernetes-") or key == "default":
            continue  # defaults are applied before validation; CEL is checked separately
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        # The API server prunes unknown fields; for tests they are errors.
        out["additionalProperties"] = False
    return out


def openapi_validator(schema: Schema) -> Any:
    """A jsonschema validator (draft 4, like OpenAPI 3.0) for a CRD's openAPIV3Schema.

    Unknown fields are errors where the schema lists `properties` (Kubernetes would
    prune them), int-or-string accepts both, and list-type map/set lists reject
    duplicate keys. CEL rules are not evaluated here: see cel_failures.
    """
    return _KubernetesValidator(_to_draft4(schema), format_checker=Draft4Validator.FORMAT_CHECKER)


def schema_errors(schema: Schema, obj: Any) -> list[str]:
    """Every OpenAPI validation error of `obj`, as 'path: message' lines."""
    errors = sorted(openapi_validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    return [f"{'.'.join(str(p) for p in e.path)}: {e.message}" for e in errors]


def api_server_problems(kind: str, manifest: Any) -> list[str]:
    """Everything the API server would reject `manifest` for: schema errors after
    defaulting, then (as the API server does, only without type errors) CEL failures.
    """
    schema = openapi_schema(kind)
    defaulted = apply_defaults(schema, manifest)
    problems = schema_errors(schema, defaulted)
    if problems:
        return problems
    return [describe_cel_failure(p, m) for p, m in cel_failures(schema, defaulted, defaulted=True)]


# ---------------------------------------------------------------------------
# Manifest editing.
# ---------------------------------------------------------------------------

DELETE = object()


def set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Sets (or with DELETE, removes) `a.b.c` in a nested dict, creating parents.

    `a.b[1].c` goes through the item of an existing list."""
    parts: list[str | int] = []
    for part in dotted.split("."):
        name, *indexes = part.replace("]", "").split("[")
        parts.append(name)
        parts.extend(int(i) for i in indexes)
    *parents, last = parts
    node: Any = doc
    for key in parents:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    if value is DELETE:
        if isinstance(last, int):
            del node[last]
        else:
            node.pop(last, None)
    else:
        node[last] = copy.deepcopy(value)


def patched(doc: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `doc` with `{dotted.path: value}` changes applied in order."""
    result = copy.deepcopy(doc)
    for dotted, value in changes.items():
        set_path(result, dotted, value)
    return result


__all__ = [
    "DELETE",
    "CelEvaluationError",
    "Schema",
    "api_server_problems",
    "apply_defaults",
    "cel_failures",
    "cel_problems",
    "cel_rules_at",
    "compile_cel",
    "crd",
    "describe_cel_failure",
    "evaluate_cel",
    "iter_schema_nodes",
    "join_path",
    "kinds",
    "openapi_schema",
    "openapi_validator",
    "patched",
    "prune_nulls",
    "rule_holds",
    "rule_message",
    "schema_at",
    "schema_errors",
    "set_path",
    "to_cel",
]
