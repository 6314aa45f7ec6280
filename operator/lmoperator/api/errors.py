"""Turning validation failures into messages that say what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from lmoperator.api.base import CROSS_FIELD_ERROR, PATTERN_MEANINGS


class InvalidResourceError(ValueError):
    """A manifest that is not a valid ElasticLM resource; `problems` lists every reason."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.what = what
        self.problems = list(problems)
        super().__init__(f"{what} is invalid: " + "; ".join(self.problems))


def field_path(loc: Sequence[str | int], prefix: str = "") -> str:
    """('spec', 'worker', 'env', 0, 'name') -> 'spec.worker.env[0].name'."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: ErrorDetails) -> str:
    """The rule an input broke, phrased as what it must be."""
    ctx = error.get("ctx") or {}
    kind = error["type"]
    simple = {
        "missing": "is required",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "model_type": "must be an object",
        "model_attributes_type": "must be an object",
        "dict_type": "must be an object",
        "list_type": "must be a list",
        "finite_number": "must be a finite number",
        "datetime_type": "must be an RFC 3339 time",
        "datetime_parsing": "must be an RFC 3339 time",
        "datetime_from_date_parsing": "must be an RFC 3339 time",
    }
    if kind in simple:
        return simple[kind]
    bounds = {
        "greater_than_equal": ("must be >= {}", "ge"),
        "greater_than": ("must be > {}", "gt"),
        "less_than_equal": ("must be <= {}", "le"),
        "less_than": ("must be < {}", "lt"),
        "string_too_short": ("must be at least {} characters long", "min_length"),
        "string_too_long": ("must be at most {} characters long", "max_length"),
        "too_short": ("must have at least {} item(s)", "min_length"),
        "too_long": ("must have at most {} item(s)", "max_length"),
        "string_pattern_mismatch": ("must match the pattern {}", "pattern"),
        "enum": ("must be one of {}", "expected"),
        "literal_error": ("must be {}", "expected"),
    }
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_MEANINGS:
        return f"must be {PATTERN_MEANINGS[ctx['pattern']]}"
    if kind in bounds:
        template, key = bounds[kind]
        return template.format(ctx.get(key, "?"))
    return error["msg"]


def describe_validation_error(
    exc: ValidationError, prefix: str = "", explain: str = ""
) -> list[str]:
    """One line per problem, each naming the field (camelCase, as written in YAML).

    `prefix` is the path of the validated object (e.g. "spec" when validating a spec
    alone); `explain` is the resource's `kubectl explain` name (e.g. "lmtj"), used to
    point at the list of valid fields when a field is unknown.
    """
    problems: list[str] = []
    for error in exc.errors():
        path = field_path(error["loc"], prefix)
        if error["type"] == CROSS_FIELD_ERROR:
            ctx = error.get("ctx") or {}
            for rule_loc, message in ctx.get("failures", []):
                where = field_path(rule_loc, path)
                # Rules on a whole spec name their own fields ("spec.replicas (3) ...").
                problems.append(
                    message if not where or message.startswith(where) else f"{where}: {message}"
                )
            continue
        if error["type"] == "extra_forbidden":
            parent = field_path([p for p in error["loc"][:-1] if isinstance(p, str)], prefix)
            target = ".".join(x for x in (explain, parent) if x)
            hint = f"; `kubectl explain {target}` lists the fields" if explain else ""
            problems.append(f"{path}: unknown field, check its spelling{hint}")
            continue
        message = f"{path}: {_describe(error)}" if path else _describe(error)
        if error["type"] != "missing" and not isinstance(error["input"], Mapping | list):
            message += f" (got {_short(error['input'])})"
        problems.append(message)
    return problems
