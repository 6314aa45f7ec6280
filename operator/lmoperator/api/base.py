"""Building blocks shared by every API type: the base model, CEL rules, quantities.

Every cross-field constraint is written twice on purpose: once in CEL, so the API
server rejects a bad object at `kubectl apply`, and once in Python, so the operator,
`elasticlm validate` and the tests reject it with the very same message. A unit test
evaluates both on the same objects and fails when they disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

CROSS_FIELD_ERROR = "cross_field"


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` rule and its Python twin.

    `rule` is evaluated by the API server with `self` bound to the object that
    declares the rule; `message_expression` builds the message shown to the user.
    `check` receives the validated Python object and returns the same message when
    the rule is violated, or None. `field_path` (for example ".path") points the
    error at one property, as Kubernetes' `fieldPath` does; without it the message
    names its fields itself.
    """

    name: str
    rule: str
    message_expression: str
    message: str
    check: Callable[[Any], str | None]
    field_path: str | None = None

    def to_openapi(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "rule": self.rule,
            "message": self.message,
            "messageExpression": self.message_expression,
        }
        if self.field_path:
            rule["fieldPath"] = self.field_path
            rule["reason"] = "FieldValueInvalid"
        return rule


def _add_cel_rules(schema: dict[str, Any], cls: type) -> None:
    rules: list[CelRule] = getattr(cls, "cel_rules", [])
    if rules:
        schema["x-kubernetes-validations"] = [r.to_openapi() for r in rules]


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields rejected.

    Rejecting unknown fields catches typos (`spec.trainig`) with a clear message
    instead of silently ignoring them, as `kubectl apply --validate=strict` does.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_add_cel_rules,
        use_attribute_docstrings=False,
    )

    cel_rules: ClassVar[list[CelRule]] = []

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        failures = [
            (rule.field_path, message)
            for rule in type(self).cel_rules
            if (message := rule.check(self)) is not None
        ]
        if failures:
            raise PydanticCustomError(
                CROSS_FIELD_ERROR,
                "{summary}",
                {
                    "summary": "; ".join(m for _, m in failures),
                    "failures": failures,
                },
            )
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible dict as the API server stores it (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def nested(model: type[BaseModel], description: str, **wire_default: Any) -> Any:
    """A sub-object that is always present: defaulted to `{}` (or `wire_default`).

    The CRD carries the same default, so the API server fills the nested defaults
    too, and a CEL rule can rely on the object being there.
    """
    return Field(
        default_factory=lambda: model.model_validate(wire_default),
        description=description,
        json_schema_extra={"default": wire_default},
    )


# Kubernetes resource.Quantity: "500m", "2Gi", "1e3", or a plain integer.
_QUANTITY_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
QUANTITY_PATTERN = _QUANTITY_RE.pattern


def _validate_quantity(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError(
            "quantity",
            "must be a Kubernetes quantity such as 2, 500m or 4Gi (got {value!r})",
            {"value": value},
        )
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise PydanticCustomError(
            "quantity",
            "must be a Kubernetes quantity such as 2, 500m or 4Gi (got {value!r})",
            {"value": value},
        )
    return value


Quantity = Annotated[
    int | str,
    PlainValidator(_validate_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# DNS-1123 label (names of claims, secrets, jobs we refer to).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# DNS-1123 subdomain (object names in general).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# metav1.Condition reason.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
