"""Label and field selectors, as the Kubernetes API server parses and applies them.

Label selectors follow k8s.io/apimachinery/pkg/labels (selector.go): the full string
syntax (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, and the numeric
`a>1` / `a<1`), comma-separated requirements that must all hold, key and value
validation, and the canonical string form (requirements sorted by key, `in` values
sorted) that Kubernetes writes into e.g. `Scale.status.selector`.

Field selectors follow k8s.io/apimachinery/pkg/fields (selector.go): `f=v`, `f==v`,
`f!=v`, comma-separated, with `\\`, `\\,` and `\\=` escapes in values. Which fields a
resource supports is the caller's business (`supported`); an unsupported one is the
400 error Kubernetes answers for core resources: `field label not supported: <field>`.

Everything here is pure: no I/O. Errors are `SelectorError` (a ValueError) whose
message is meant to be returned to the client as a 400 BadRequest.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from devcluster.gofmt import go_quote

__all__ = [
    "FieldSelector",
    "FieldTerm",
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "everything",
    "label_selector_from_dict",
    "nothing",
    "parse_field_selector",
    "parse_label_selector",
    "selector_from_map",
]


class SelectorError(ValueError):
    """A label or field selector that Kubernetes would refuse (answered as 400 BadRequest)."""


# ---------------------------------------------------------------------------
# Label keys and values (k8s.io/apimachinery/pkg/util/validation).
# ---------------------------------------------------------------------------

_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_RE = re.compile(f"^{_QUALIFIED_NAME_FMT}$")
_LABEL_VALUE_FMT = f"({_QUALIFIED_NAME_FMT})?"
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FMT}$")
_DNS1123_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_NAME_MAX_LENGTH = 63
_PREFIX_MAX_LENGTH = 253

_NAME_CHARSET_MESSAGE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    f"validation is '{_QUALIFIED_NAME_FMT}')"
)
_VALUE_CHARSET_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE_FMT}')"
)
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    f"used for validation is '{_DNS1123_SUBDOMAIN_FMT}')"
)


def _qualified_name_problems(key: str) -> list[str]:
    """Why `key` is not a valid label key (an optional DNS subdomain prefix and `/`, then a
    name of at most 63 characters); empty when it is. Mirrors IsQualifiedName.
    """
    parts = key.split("/")
    if len(parts) == 1:
        prefix, name = "", parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
    else:
        return [
            f"a qualified name {_NAME_CHARSET_MESSAGE} with an optional DNS subdomain prefix "
            "and '/' (e.g. 'example.com/MyName')"
        ]
    problems: list[str] = []
    if prefix:
        if len(prefix) > _PREFIX_MAX_LENGTH:
            problems.append(f"prefix part must be no more than {_PREFIX_MAX_LENGTH} characters")
        if not _DNS1123_SUBDOMAIN_RE.match(prefix):
            problems.append(f"prefix part {_SUBDOMAIN_MESSAGE}")
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > _NAME_MAX_LENGTH:
        problems.append(f"name part must be no more than {_NAME_MAX_LENGTH} characters")
    if name and not _QUALIFIED_NAME_RE.match(name):
        problems.append(f"name part {_NAME_CHARSET_MESSAGE}")
    return problems


def _label_value_problems(value: str) -> list[str]:
    problems: list[str] = []
    if len(value) > _NAME_MAX_LENGTH:
        problems.append(f"must be no more than {_NAME_MAX_LENGTH} characters")
    if not _LABEL_VALUE_RE.match(value):
        problems.append(_VALUE_CHARSET_MESSAGE)
    return problems


def _check_key(key: str) -> None:
    problems = _qualified_name_problems(key)
    if problems:
        raise SelectorError(f"key: Invalid value: {go_quote(key)}: {'; '.join(problems)}")


def _check_value(key: str, index: int, value: str) -> None:
    problems = _label_value_problems(value)
    if problems:
        raise SelectorError(
            f"values[{index}][{key}]: Invalid value: {go_quote(value)}: {'; '.join(problems)}"
        )


# ---------------------------------------------------------------------------
# Requirements and selectors.
# ---------------------------------------------------------------------------


class Operator(StrEnum):
    """selection.Operator; the value is how the operator is written in a selector."""

    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = ">"
    LESS_THAN = "<"


_SINGLE_VALUE_OPERATORS = {
    Operator.EQUALS,
    Operator.DOUBLE_EQUALS,
    Operator.NOT_EQUALS,
    Operator.GREATER_THAN,
    Operator.LESS_THAN,
}
_NUMERIC_OPERATORS = {Operator.GREATER_THAN, Operator.LESS_THAN}


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector. `values` are kept sorted and de-duplicated, as the
    Go code keeps them in a string set.
    """

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    @classmethod
    def create(cls, key: str, operator: Operator, values: Collection[str] = ()) -> Requirement:
        """A validated requirement (labels.NewRequirement); raises SelectorError."""
        _check_key(key)
        unique = tuple(sorted(set(values)))
        if operator in (Operator.IN, Operator.NOT_IN) and not unique:
            raise SelectorError(
                "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
            )
        if operator in _SINGLE_VALUE_OPERATORS and len(unique) != 1:
            if operator in _NUMERIC_OPERATORS:
                detail = "for 'Gt', 'Lt' operators, exactly one value is required"
            else:
                detail = "exact-match compatibility requires one single value"
            raise SelectorError(f"values: Invalid value: {list(unique)}: {detail}")
        if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and unique:
            raise SelectorError(
                f"values: Invalid value: {list(unique)}: "
                "values set must be empty for exists and does not exist"
            )
        for index, value in enumerate(unique):
            if operator in _NUMERIC_OPERATORS and not re.fullmatch(r"[+-]?[0-9]+", value):
                raise SelectorError(
                    f"values[{index}]: Invalid value: {go_quote(value)}: "
                    "for 'Gt', 'Lt' operators, the value must be an integer"
                )
            _check_value(key, index, value)
        return cls(key, operator, unique)

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        op = self.operator
        if op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN):
            return present and labels[self.key] in self.values
        if op in (Operator.NOT_EQUALS, Operator.NOT_IN):
            return not present or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return present
        if op is Operator.DOES_NOT_EXIST:
            return not present
        # Gt / Lt: a label that is not an integer never matches.
        if not present or not re.fullmatch(r"[+-]?[0-9]+", labels[self.key]):
            return False
        actual, bound = int(labels[self.key]), int(self.values[0])
        return actual > bound if op is Operator.GREATER_THAN else actual < bound

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({','.join(self.values)})"
        return f"{self.key}{op.value}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """Requirements that must all hold. No requirements selects everything;
    `match_nothing` (what a nil metav1.LabelSelector converts to) selects no object.
    """

    requirements: tuple[Requirement, ...] = ()
    match_nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.match_nothing:
            return False
        present = labels or {}
        return all(requirement.matches(present) for requirement in self.requirements)

    def empty(self) -> bool:
        """Whether this selector selects every object."""
        return not self.match_nothing and not self.requirements

    def __str__(self) -> str:
        # labels.Nothing() also prints as "": callers that store selectors should not
        # round-trip a nothing-selector through its string form.
        return ",".join(str(requirement) for requirement in self.requirements)


def _sorted_selector(requirements: list[Requirement]) -> LabelSelector:
    # Kubernetes sorts requirements by key (stable for equal keys in practice).
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


def everything() -> LabelSelector:
    return LabelSelector()


def nothing() -> LabelSelector:
    return LabelSelector(match_nothing=True)


# ---------------------------------------------------------------------------
# The label selector parser (a transcription of labels.Parser).
# ---------------------------------------------------------------------------

# Token kinds.
_IDENTIFIER = "identifier"
_END = "end of string"
_COMMA = ","
_OPEN = "("
_CLOSE = ")"
_IN = "in"
_NOT_IN = "notin"
_BANG = "!"
_OPERATOR_TOKENS = {"=": Operator.EQUALS, "==": Operator.DOUBLE_EQUALS, "!=": Operator.NOT_EQUALS}
_OPERATOR_TOKENS.update({">": Operator.GREATER_THAN, "<": Operator.LESS_THAN})
_SPECIAL_SYMBOLS = set("=!(),><")
_WHITESPACE = set(" \t\r\n")
_BINARY_OPERATORS = "in, notin, =, ==, !=, gt, lt"


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """(kind, literal) tokens of a selector string, then (_END, "")."""
    position = 0
    while position < len(text):
        char = text[position]
        if char in _WHITESPACE:
            position += 1
            continue
        if char in _SPECIAL_SYMBOLS:
            two = text[position : position + 2]
            literal = two if two in ("==", "!=") else char
            position += len(literal)
            yield literal, literal  # operators, "!", "(", ")" and "," are their own kind
            continue
        start = position
        while (
            position < len(text)
            and text[position] not in _WHITESPACE
            and text[position] not in _SPECIAL_SYMBOLS
        ):
            position += 1
        word = text[start:position]
        yield (word if word in (_IN, _NOT_IN) else _IDENTIFIER), word
    yield _END, ""


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.items = list(_tokens(text))
        self.position = 0

    def lookahead(self, values_context: bool) -> tuple[str, str]:
        return self._adjust(self.items[self.position], values_context)

    def consume(self, values_context: bool) -> tuple[str, str]:
        item = self.items[self.position]
        if self.position < len(self.items) - 1:
            self.position += 1
        return self._adjust(item, values_context)

    @staticmethod
    def _adjust(item: tuple[str, str], values_context: bool) -> tuple[str, str]:
        # `in` and `notin` are plain identifiers where a key or value is expected.
        kind, literal = item
        if values_context and kind in (_IN, _NOT_IN):
            return _IDENTIFIER, literal
        return kind, literal

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            kind, literal = self.lookahead(True)
            if kind == _END:
                return requirements
            if kind not in (_IDENTIFIER, _BANG):
                raise SelectorError(
                    f"found '{literal}', expected: !, identifier, or 'end of string'"
                )
            try:
                requirements.append(self.requirement())
            except SelectorError as exc:
                raise SelectorError(f"unable to parse requirement: {exc}") from None
            kind, literal = self.consume(True)
            if kind == _END:
                return requirements
            if kind != _COMMA:
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            next_kind, next_literal = self.lookahead(True)
            if next_kind not in (_IDENTIFIER, _BANG):
                raise SelectorError(f"found '{next_literal}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        key, operator = self.key_and_inferred_operator()
        if operator is not None:
            return Requirement.create(key, operator)
        operator = self.operator()
        if operator in (Operator.IN, Operator.NOT_IN):
            values = self.value_set()
        else:
            values = self.exact_value()
        return Requirement.create(key, operator, values)

    def key_and_inferred_operator(self) -> tuple[str, Operator | None]:
        kind, literal = self.consume(True)
        negated = kind == _BANG
        if negated:
            kind, literal = self.consume(True)
        if kind != _IDENTIFIER:
            raise SelectorError(f"found '{literal}', expected: identifier")
        _check_key(literal)
        if negated:
            return literal, Operator.DOES_NOT_EXIST
        if self.lookahead(True)[0] in (_END, _COMMA):
            return literal, Operator.EXISTS
        return literal, None

    def operator(self) -> Operator:
        kind, literal = self.consume(False)
        if kind == _IN:
            return Operator.IN
        if kind == _NOT_IN:
            return Operator.NOT_IN
        if kind in _OPERATOR_TOKENS:
            return _OPERATOR_TOKENS[kind]
        raise SelectorError(f"found '{literal}', expected: {_BINARY_OPERATORS}")

    def exact_value(self) -> list[str]:
        kind, _ = self.lookahead(True)
        if kind in (_END, _COMMA):
            return [""]  # `a=` selects an empty value
        kind, literal = self.consume(True)
        if kind == _IDENTIFIER:
            return [literal]
        raise SelectorError(f"found '{literal}', expected: identifier")

    def value_set(self) -> list[str]:
        kind, literal = self.consume(True)
        if kind != _OPEN:
            raise SelectorError(f"found '{literal}' expected: '('")
        kind, literal = self.lookahead(True)
        if kind == _CLOSE:
            self.consume(True)
            return [""]  # `a in ()` is the empty value
        if kind not in (_IDENTIFIER, _COMMA):
            raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")
        values = self.identifier_list()
        kind, literal = self.consume(True)
        if kind != _CLOSE:
            raise SelectorError(f"found '{literal}', expected: ')'")
        return values

    def identifier_list(self) -> list[str]:
        # Empty entries (`(a,)`, `(,a)`, `(a,,b)`) stand for the empty value, as in Go.
        values: list[str] = []
        while True:
            kind, literal = self.consume(True)
            if kind == _IDENTIFIER:
                values.append(literal)
                next_kind, next_literal = self.lookahead(True)
                if next_kind == _COMMA:
                    continue
                if next_kind == _CLOSE:
                    return values
                raise SelectorError(f"found '{next_literal}', expected: ',' or ')'")
            if kind == _COMMA:
                if not values:
                    values.append("")
                next_kind, _ = self.lookahead(True)
                if next_kind == _CLOSE:
                    values.append("")
                    return values
                if next_kind == _COMMA:
                    self.consume(True)
                    values.append("")
                continue
            raise SelectorError(f"found '{literal}', expected: ',', or identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """Parses a label selector string; "" (or only whitespace) selects everything."""
    return _sorted_selector(_LabelParser(text).parse())


def selector_from_map(labels: Mapping[str, str]) -> LabelSelector:
    """The selector of a Service-style `{key: value}` map: every pair must match.

    An empty map selects everything (labels.SelectorFromSet); callers for which an
    empty selector means "no pods" (a Service without a selector) decide that themselves.
    """
    return _sorted_selector(
        [Requirement.create(key, Operator.EQUALS, [value]) for key, value in labels.items()]
    )


_EXPRESSION_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


def label_selector_from_dict(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (`matchLabels`, `matchExpressions`) as a selector.

    None selects nothing and `{}` selects everything, as metav1.LabelSelectorAsSelector.
    """
    if selector is None:
        return nothing()
    if not isinstance(selector, Mapping):
        raise SelectorError(f"a label selector must be an object, got {type(selector).__name__}")
    requirements: list[Requirement] = []
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError("matchLabels must be an object of string values")
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise SelectorError(f"matchLabels[{key}] must be a string, got {value!r}")
        requirements.append(Requirement.create(str(key), Operator.EQUALS, [value]))
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        requirements.append(_requirement_from_expression(index, expression))
    return _sorted_selector(requirements)


def _requirement_from_expression(index: int, expression: Any) -> Requirement:
    where = f"matchExpressions[{index}]"
    if not isinstance(expression, Mapping):
        raise SelectorError(f"{where} must be an object with key, operator and values")
    operator_name = expression.get("operator")
    if operator_name not in _EXPRESSION_OPERATORS:
        raise SelectorError(
            f'{where}.operator: "{operator_name}" is not a valid label selector operator'
        )
    operator = _EXPRESSION_OPERATORS[operator_name]
    key = expression.get("key")
    if not isinstance(key, str):
        raise SelectorError(f"{where}.key must be a string")
    values = expression.get("values") or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{where}.values must be a list of strings")
    return Requirement.create(key, operator, values)


# ---------------------------------------------------------------------------
# Field selectors.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldTerm:
    """`field=value` (or `field!=value` when `negated`)."""

    field: str
    value: str
    negated: bool = False

    def matches(self, actual: str) -> bool:
        return (actual == self.value) != self.negated

    def __str__(self) -> str:
        return f"{self.field}{'!=' if self.negated else '='}{_escape_field_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """Terms that must all hold; no terms selects everything."""

    terms: tuple[FieldTerm, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(term.matches(field_value(obj, term.field)) for term in self.terms)

    def empty(self) -> bool:
        return not self.terms

    def __str__(self) -> str:
        return ",".join(str(term) for term in self.terms)


def field_value(obj: Mapping[str, Any], dotted: str) -> str:
    """The value of a dotted path as a field selector compares it: missing is "",
    booleans are "true"/"false" (e.g. Node spec.unschedulable), numbers as written.
    """
    value: Any = obj
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ""
        value = value[part]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_field_value(value: str) -> str:
    """fields.UnescapeValue: `\\\\`, `\\,` and `\\=` are escapes; bare `,` or `=` are errors."""
    out: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            if char not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{char}")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {char}")
        else:
            out.append(char)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_field_terms(text: str) -> list[str]:
    """Splits on commas not escaped by a backslash."""
    terms: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == ",":
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return terms


def _split_field_term(term: str) -> tuple[str, str, str] | None:
    """(field, operator, raw value) at the first `!=`, `==` or `=`; None without one."""
    for index in range(len(term)):
        for operator in ("!=", "==", "="):
            if term.startswith(operator, index):
                return term[:index], operator, term[index + len(operator) :]
    return None


def parse_field_selector(text: str, supported: Collection[str]) -> FieldSelector:
    """Parses a field selector and checks every field is one the resource supports.

    Kubernetes does not trim whitespace in field selectors, and neither does this.
    """
    terms: list[FieldTerm] = []
    for part in sorted(_split_field_terms(text)):
        if not part:
            continue
        split = _split_field_term(part)
        if split is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field, operator, raw_value = split
        value = _unescape_field_value(raw_value)
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        terms.append(FieldTerm(field, value, negated=operator == "!="))
    return FieldSelector(tuple(terms))
