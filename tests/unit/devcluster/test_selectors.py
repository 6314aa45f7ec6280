"""Label and field selectors behave, print and fail like k8s.io/apimachinery's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devcluster.selectors import (
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    everything,
    label_selector_from_dict,
    nothing,
    parse_field_selector,
    parse_label_selector,
    selector_from_map,
)

NAME_FORMAT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
VALUE_FORMAT = f"({NAME_FORMAT})?"
BAD_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '{VALUE_FORMAT}')"
)
BAD_NAME = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    f"validation is '{NAME_FORMAT}')"
)


# ---------------------------------------------------------------------------
# Parsing and the canonical string form.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("   ", ""),
        ("a=b", "a=b"),
        ("a==b", "a==b"),
        ("a!=b", "a!=b"),
        ("a", "a"),
        ("!a", "!a"),
        ("a=", "a="),
        ("a in (z,y,x)", "a in (x,y,z)"),
        ("a notin ( b , c )", "a notin (b,c)"),
        ("a in (b,b)", "a in (b)"),
        ("a in ()", "a in ()"),
        ("a in (x,)", "a in (,x)"),
        ("a in (,x)", "a in (,x)"),
        ("a>3", "a>3"),
        ("a < 10", "a<10"),
        # Requirements are sorted by key; whitespace does not matter.
        ("z=1, a=2 ,m", "a=2,m,z=1"),
        ("tier in (db,web),!canary,app=x", "app=x,!canary,tier in (db,web)"),
        ("example.com/role != worker", "example.com/role!=worker"),
        # `in` and `notin` are identifiers where a key or value is expected.
        ("in in (in, notin)", "in in (in,notin)"),
        ("a.b-c/d_e.F=g", "a.b-c/d_e.F=g"),
    ],
)
def test_parse_label_selector_canonical_form(text: str, canonical: str) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert parse_label_selector(canonical) == selector


def test_parse_label_selector_structure() -> None:
    selector = parse_label_selector("b in (y,x), a")
    assert selector.requirements == (
        Requirement("a", Operator.EXISTS),
        Requirement("b", Operator.IN, ("x", "y")),
    )
    assert parse_label_selector("").empty()
    assert not selector.empty()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
        ("a,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("a=b@", f'unable to parse requirement: values[0][a]: Invalid value: "b@": {BAD_VALUE}'),
        (
            "a=" + "v" * 64,
            f'unable to parse requirement: values[0][a]: Invalid value: "{"v" * 64}": '
            "must be no more than 63 characters",
        ),
        ("a=-b", f'unable to parse requirement: values[0][a]: Invalid value: "-b": {BAD_VALUE}'),
        ("-a", f'unable to parse requirement: key: Invalid value: "-a": name part {BAD_NAME}'),
        (
            "k" * 64,
            f'unable to parse requirement: key: Invalid value: "{"k" * 64}": '
            "name part must be no more than 63 characters",
        ),
        (
            "/a",
            'unable to parse requirement: key: Invalid value: "/a": prefix part must be non-empty',
        ),
        (
            "a/",
            'unable to parse requirement: key: Invalid value: "a/": name part must be non-empty',
        ),
        (
            "x/y/z",
            f'unable to parse requirement: key: Invalid value: "x/y/z": a qualified name {BAD_NAME}'
            " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        ),
        (
            "a>x",
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' "
            "operators, the value must be an integer",
        ),
    ],
)
def test_parse_label_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    assert str(caught.value) == message


def test_bad_prefix_names_the_subdomain_rule() -> None:
    with pytest.raises(SelectorError, match="prefix part a lowercase RFC 1123 subdomain"):
        parse_label_selector("Example.com/a")


# ---------------------------------------------------------------------------
# Matching.
# ---------------------------------------------------------------------------

LABELS = {"app": "web", "tier": "front", "version": "12", "empty": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("missing=x", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),  # NotEquals and NotIn match a missing label
        ("app in (db,web)", True),
        ("app in (db)", False),
        ("missing in (x)", False),
        ("app notin (db)", True),
        ("app notin (web)", False),
        ("missing notin (x)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("empty=", True),
        ("empty in ()", True),
        ("missing=", False),
        ("version>11", True),
        ("version>12", False),
        ("version<13", True),
        ("app>1", False),  # not an integer: never matches
        ("missing<1", False),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
    ],
)
def test_label_selector_matches(text: str, expected: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is expected


def test_matches_none_labels() -> None:
    assert parse_label_selector("").matches(None)
    assert parse_label_selector("!a").matches(None)
    assert not parse_label_selector("a").matches(None)


def test_everything_and_nothing() -> None:
    assert everything().matches({})
    assert everything().empty()
    assert not nothing().matches({})
    assert not nothing().matches(LABELS)
    assert not nothing().empty()


# ---------------------------------------------------------------------------
# metav1.LabelSelector and Service selectors.
# ---------------------------------------------------------------------------


def test_label_selector_from_dict() -> None:
    selector = label_selector_from_dict(
        {
            "matchLabels": {"tier": "front", "app": "web"},
            "matchExpressions": [
                {"key": "version", "operator": "In", "values": ["2", "1"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "zone", "operator": "Exists"},
            ],
        }
    )
    assert str(selector) == "app=web,!canary,env notin (prod),tier=front,version in (1,2),zone"
    assert selector.matches({"app": "web", "tier": "front", "version": "1", "zone": "a"})
    assert not selector.matches({"app": "web", "tier": "front", "version": "1"})


def test_label_selector_from_dict_empty_and_none() -> None:
    assert label_selector_from_dict({}) == everything()
    assert label_selector_from_dict({"matchLabels": {}, "matchExpressions": []}) == everything()
    assert label_selector_from_dict(None) == nothing()


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
            'matchExpressions[0].operator: "Equals" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
            "values: Invalid value: ['b']: values set must be empty for exists and does not exist",
        ),
        (
            {"matchExpressions": ["a"]},
            "matchExpressions[0] must be an object with key, operator and values",
        ),
        ({"matchLabels": {"a": 1}}, "matchLabels[a] must be a string, got 1"),
        ({"matchLabels": {"a": "b c"}}, f'values[0][a]: Invalid value: "b c": {BAD_VALUE}'),
    ],
)
def test_label_selector_from_dict_errors(selector: dict[str, object], message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        label_selector_from_dict(selector)
    assert str(caught.value) == message


def test_selector_from_map() -> None:
    selector = selector_from_map({"b": "2", "a": "1"})
    assert str(selector) == "a=1,b=2"
    assert selector.matches({"a": "1", "b": "2", "c": "3"})
    assert not selector.matches({"a": "1"})
    assert selector_from_map({}) == everything()
    with pytest.raises(SelectorError, match="Invalid value"):
        selector_from_map({"a": "not valid"})


# ---------------------------------------------------------------------------
# Field selectors.
# ---------------------------------------------------------------------------

POD_FIELDS = ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase")
POD = {
    "metadata": {"name": "web-0", "namespace": "default"},
    "spec": {"nodeName": "node-1", "unschedulable": False, "priority": 7},
    "status": {"phase": "Running"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("metadata.name=web-0", True),
        ("metadata.name==web-0", True),
        ("metadata.name!=web-0", False),
        ("status.phase=Running,spec.nodeName=node-1", True),
        ("status.phase=Running,spec.nodeName!=node-1", False),
        ("spec.nodeName!=", True),
        ("metadata.namespace=", False),
    ],
)
def test_field_selector_matches(text: str, expected: bool) -> None:
    assert parse_field_selector(text, POD_FIELDS).matches(POD) is expected


def test_field_selector_missing_value_is_empty_string() -> None:
    pending = {"metadata": {"name": "p"}, "spec": {}, "status": {}}
    assert parse_field_selector("spec.nodeName=", POD_FIELDS).matches(pending)
    assert not parse_field_selector("spec.nodeName!=", POD_FIELDS).matches(pending)


def test_field_selector_booleans_and_numbers() -> None:
    fields = ("spec.unschedulable", "spec.priority")
    assert parse_field_selector("spec.unschedulable=false", fields).matches(POD)
    assert parse_field_selector("spec.priority=7", fields).matches(POD)


def test_field_selector_escapes_and_string_form() -> None:
    selector = parse_field_selector(r"status.phase!=a\,b,metadata.name=x\=y\\z", POD_FIELDS)
    assert selector.terms[0].field == "metadata.name"  # terms are sorted, as in Go
    assert selector.terms[0].value == "x=y\\z"
    assert selector.terms[1].value == "a,b"
    assert str(selector) == r"metadata.name=x\=y\\z,status.phase!=a\,b"
    assert parse_field_selector(str(selector), POD_FIELDS) == selector
    assert selector.matches({"metadata": {"name": "x=y\\z"}, "status": {"phase": "c"}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec.hostname=x", "field label not supported: spec.hostname"),
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: ="),
        (r"metadata.name=a\x", r"invalid field selector: invalid escape sequence: \x"),
        ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
        (" metadata.name=a", "field label not supported:  metadata.name"),
    ],
)
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_field_selector(text, POD_FIELDS)
    assert str(caught.value) == message


def test_empty_field_selector() -> None:
    selector = parse_field_selector("", POD_FIELDS)
    assert selector == FieldSelector()
    assert selector.empty()
    assert str(selector) == ""


# ---------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------

_names = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,8}[a-z0-9])?", fullmatch=True)
_keys = st.one_of(
    _names, st.builds(lambda p, n: f"{p}.io/{n}", st.sampled_from(["a", "x-y"]), _names)
)
_values = st.one_of(st.just(""), _names)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    operator = draw(st.sampled_from(list(Operator)))
    key = draw(_keys)
    if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        values: list[str] = []
    elif operator in (Operator.IN, Operator.NOT_IN):
        values = draw(st.lists(_values, min_size=1, max_size=3))
    elif operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
        values = [str(draw(st.integers(0, 999)))]
    else:
        values = [draw(_values)]
    return Requirement.create(key, operator, values)


label_selectors = st.builds(
    lambda rs: LabelSelector(tuple(sorted(rs, key=lambda r: r.key))),
    st.lists(requirements(), max_size=4),
)
label_sets = st.dictionaries(_keys, st.one_of(_values, st.integers(0, 999).map(str)), max_size=4)


@given(label_selectors, label_sets)
def test_parse_of_string_form_is_the_same_selector(
    selector: LabelSelector, labels: dict[str, str]
) -> None:
    parsed = parse_label_selector(str(selector))
    assert parsed == selector
    assert parsed.matches(labels) == selector.matches(labels)


@given(label_sets)
def test_map_selector_matches_its_own_labels(labels: dict[str, str]) -> None:
    assert selector_from_map(labels).matches(labels)
    assert parse_label_selector(str(selector_from_map(labels))).matches(labels)


@given(
    st.lists(st.tuples(st.sampled_from(POD_FIELDS), st.text(max_size=6), st.booleans()), max_size=3)
)
def test_field_selector_string_form_round_trips(terms: list[tuple[str, str, bool]]) -> None:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")

    text = ",".join(f"{f}{'!=' if neg else '='}{escape(v)}" for f, v, neg in terms)
    selector = parse_field_selector(text, POD_FIELDS)
    assert parse_field_selector(str(selector), POD_FIELDS) == selector
