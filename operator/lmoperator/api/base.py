"""Building blocks shared by every API type: the base model, CEL rules, quantities.

Every cross-field constraint is written twice on purpose: once in CEL, so the API
server rejects a bad object at `kubectl apply`, and once in Python, so the operator,
`elasticlm validate` and the tests reject it with the very same message. A unit test
evaluates both on the same objects and fails when they disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
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


_VALIDATION_DEPTH: ContextVar[int] = ContextVar("_VALIDATION_DEPTH", default=0)

Loc = tuple[str | int, ...]


def rule_failures(node: BaseModel, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    """(location, message) for every violated rule in `node` and everything below it.

    The location is relative to `node`, with wire (camelCase) names; a rule's
    `field_path` (".path") is appended as one more name.
    """
    for rule in getattr(node, "cel_rules", []):
        message = rule.check(node)
        if message is not None:
            yield ((*loc, rule.field_path[1:]) if rule.field_path else loc), message
    for name, field in type(node).model_fields.items():
        value = getattr(node, name)
        key = field.alias or name
        if isinstance(value, BaseModel):
            yield from rule_failures(value, (*loc, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from rule_failures(item, (*loc, key, index))


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields rejected.

    Rejecting unknown fields catches typos (`spec.trainig`) with a clear message
    instead of silently ignoring them, as `kubectl apply --validate=strict` does.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        # JSON has no infinity or NaN, and the API server rejects them.
        allow_inf_nan=False,
        json_schema_extra=_add_cel_rules,
    )

    cel_rules: ClassVar[list[CelRule]] = []

    @model_validator(mode="wrap")
    @classmethod
    def _check_cel_rules(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # The API server evaluates every rule of every object that exists, so a
        # failing rule deep in the tree never hides one above it. Only the outermost
        # model being validated checks rules, over the whole validated tree.
        token = _VALIDATION_DEPTH.set(_VALIDATION_DEPTH.get() + 1)
        try:
            instance = handler(data)
        finally:
            _VALIDATION_DEPTH.reset(token)
        if _VALIDATION_DEPTH.get() == 0:
            failures = list(rule_failures(instance))
            if failures:
                raise PydanticCustomError(
                    CROSS_FIELD_ERROR,
                    "{summary}",
                    {"summary": "; ".join(m for _, m in failures), "failures": failures},
                )
        return instance

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
_QUANTITY_RE = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
)
QUANTITY_PATTERN = _QUANTITY_RE.pattern


def _validate_quantity(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError(
            "quantity",
            "must be a Kubernetes quantity such as 2, 500m or 4Gi",
        )
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise PydanticCustomError(
            "quantity",
            "must be a Kubernetes quantity such as 2, 500m or 4Gi",
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


def unique_by(key: str) -> AfterValidator:
    """Reject a list with two items sharing `key`, as a Kubernetes list-map does."""

    def check(items: list[Any] | None) -> list[Any] | None:
        seen: dict[Any, int] = {}
        for index, item in enumerate(items or []):
            value = getattr(item, key)
            if value in seen:
                raise PydanticCustomError(
                    "duplicate_key",
                    "items {first} and {second} have the same {key} '{value}'; each {key} "
                    "may appear once",
                    {"first": seen[value], "second": index, "key": key, "value": str(value)},
                )
            seen[value] = index
        return items

    return AfterValidator(check)


# DNS-1123 label (names of claims, secrets, jobs we refer to).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# DNS-1123 subdomain (object names in general).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# metav1.Condition reason.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# A key of a Secret or ConfigMap.
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
# An environment variable name.
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# Five fields separated by spaces.
CRON_PATTERN = r"^[^ \t]+( +[^ \t]+){4}$"
HTTP_URL_PATTERN = r"^https?://"

# What each pattern means, for error messages people can act on.
PATTERN_MEANINGS = {
    DNS_LABEL_PATTERN: "a DNS-1123 label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit",
    DNS_SUBDOMAIN_PATTERN: "a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit",
    CONDITION_REASON_PATTERN: "a CamelCase reason",
    CONFIG_KEY_PATTERN: "a key made of letters, digits, '-', '_' and '.'",
    ENV_NAME_PATTERN: "a variable name made of letters, digits, '-', '_' and '.', "
    "not starting with a digit",
    CRON_PATTERN: "a five-field cron expression such as '0 8 * * 1-5'",
    HTTP_URL_PATTERN: "an http:// or https:// URL",
    QUANTITY_PATTERN: "a Kubernetes quantity such as 2, 500m or 4Gi",
}
