"""Admission of a custom resource: drop nulls, prune, default, validate, evaluate the
CEL rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devcluster.schema.cel import evaluate_rules
from devcluster.schema.common import (
    BLOCKING_REASONS,
    FORBIDDEN,
    INVALID,
    NOT_ALL_RULES_CHECKED,
    ROOT_FIELD,
    FieldError,
    Schema,
    error_field,
)
from devcluster.schema.prune import apply_defaults, drop_nulls, normalize_integers, prune
from devcluster.schema.validation import validate


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
            errors.append(FieldError(error_field(path), FORBIDDEN, f'unknown field "{path}"'))
        else:
            warnings.append(f'unknown field "{path}"')
    admitted = normalize_integers(schema, apply_defaults(schema, pruned))
    schema_errors = validate(schema, admitted, old_obj=old_obj)
    errors.extend(schema_errors)
    if any(error.reason in BLOCKING_REASONS for error in schema_errors):
        errors.append(FieldError(ROOT_FIELD, INVALID, NOT_ALL_RULES_CHECKED, None))
    else:
        rule_errors, rule_warnings = evaluate_rules(schema, admitted, old_obj)
        errors.extend(rule_errors)
        warnings.extend(rule_warnings)
    return AdmissionResult(admitted, errors, warnings, unknown, strict)
