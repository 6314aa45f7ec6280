"""Structural schema checks, as kube-apiserver makes them when a CRD is created or
updated.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from devcluster.gofmt import field_error_value
from devcluster.patch import json_equal
from devcluster.schema.cel import field_path_suffix
from devcluster.schema.common import (
    DUPLICATE,
    FORBIDDEN,
    INVALID,
    REQUIRED,
    Schema,
    items_of,
    preserves_unknown,
    properties_of,
)
from devcluster.schema.prune import prune_node
from devcluster.schema.validation import compile_pattern, validate

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
        for key, child in properties_of(node).items():
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
        items = items_of(node) or {}
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
        properties = properties_of(items)
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
        if "properties" not in node and not preserves_unknown(node):
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
        pruned = prune_node(node, copy.deepcopy(node["default"]), "default", removed, root=False)
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
                not isinstance(field_path, str) or field_path_suffix(field_path) == ""
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
        _, problem = compile_pattern(pattern)
        if problem:
            self.add(
                f"{path}.pattern",
                f"Invalid value: {field_error_value(pattern)}: must be a valid regular expression, "
                f"but isn't: {problem}",
            )
