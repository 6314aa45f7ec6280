"""CRD structural schemas: nulls, pruning, defaulting, validation and CEL, as kube-apiserver."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings

from devcluster.gofmt import go_float
from devcluster.schema.admission import admit
from devcluster.schema.cel import cel_compile_warnings, evaluate_rules
from devcluster.schema.common import FieldError
from devcluster.schema.prune import apply_defaults, drop_nulls, prune
from devcluster.schema.structural import structural_problems
from devcluster.schema.validation import validate
from tests.unit import crd_helpers
from tests.unit.strategies import services, training_jobs

ROOT = Path(__file__).resolve().parents[3]
NOT_CHECKED = (
    '<nil>: Invalid value: "null": some validation rules were not checked because the object '
    "was invalid; correct the existing errors to complete validation"
)


@functools.cache
def _crd_schema(kind: str) -> dict[str, Any]:
    name = {"LMTrainingJob": "lmtrainingjobs", "LMService": "lmservices"}[kind]
    crd = yaml.safe_load((ROOT / "crds" / f"{name}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def crd_schema(kind: str) -> dict[str, Any]:
    return copy.deepcopy(_crd_schema(kind))


def example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "manifests" / "examples" / name).read_text())
    return document


def described(errors: list[FieldError]) -> list[str]:
    return [error.describe() for error in errors]


# ---------------------------------------------------------------------------
# Messages.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (4096.0, "4096"),
        (0.7, "0.7"),
        (0.0003, "0.0003"),
        (0.00001, "1e-05"),
        (100000.0, "100000"),
        (1000000.0, "1e+06"),
        (1e8, "1e+08"),
        (1048576.0, "1.048576e+06"),
        (-2.5, "-2.5"),
        (0.0, "0"),
        (float("inf"), "+Inf"),
    ],
)
def test_go_float(value: float, text: str) -> None:
    assert go_float(value) == text


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (FieldError("spec.foo", "FieldValueRequired", ""), "spec.foo: Required value"),
        (
            FieldError("spec.replicas", "FieldValueInvalid", "too small", 0),
            "spec.replicas: Invalid value: 0: too small",
        ),
        (
            FieldError("spec.precision", "FieldValueNotSupported", 'supported values: "a"', "fp8"),
            'spec.precision: Unsupported value: "fp8": supported values: "a"',
        ),
        (
            FieldError("spec.r", "FieldValueTypeInvalid", "must be", "string"),
            'spec.r: Invalid value: "string": must be',
        ),
        (
            FieldError("spec.n", "FieldValueTooLong", "may not be more than 3 bytes", "abcd"),
            "spec.n: Too long: may not be more than 3 bytes",
        ),
        (
            FieldError("spec.l", "FieldValueTooMany", "must have at most 2 items", 3),
            "spec.l: Too many: 3: must have at most 2 items",
        ),
        (
            FieldError("spec.l[1]", "FieldValueDuplicate", "", {"name": "a"}),
            'spec.l[1]: Duplicate value: {"name":"a"}',
        ),
        (
            FieldError("spec.a", "FieldValueForbidden", "not allowed"),
            "spec.a: Forbidden: not allowed",
        ),
        (FieldError("", "FieldValueInvalid", "bad", None), '<nil>: Invalid value: "null": bad'),
        (FieldError("spec.f", "FieldValueInvalid", "bad", 0.5), "spec.f: Invalid value: 0.5: bad"),
        (
            FieldError("spec.b", "FieldValueInvalid", "bad", True),
            "spec.b: Invalid value: true: bad",
        ),
    ],
)
def test_field_error_describe(error: FieldError, text: str) -> None:
    assert error.describe() == text
    assert error.describe().endswith(error.body())


# ---------------------------------------------------------------------------
# OpenAPI validation.
# ---------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
                "title": {"type": "string", "maxLength": 3},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "ratio": {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMinimum": True,
                    "maximum": 1,
                    "exclusiveMaximum": True,
                },
                "step": {"type": "number", "multipleOf": 0.5},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "level": {"type": "integer", "enum": [1, 2]},
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": 2,
                    "x-kubernetes-list-type": "set",
                },
                "env": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                    },
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                },
                "limits": {
                    "type": "object",
                    "maxProperties": 2,
                    "additionalProperties": {
                        "x-kubernetes-int-or-string": True,
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                        "pattern": "^[0-9]+[a-zA-Z]*$",
                    },
                },
                "when": {"type": "string", "format": "date-time"},
                "ip": {"type": "string", "format": "ipv4"},
                "note": {"type": "string", "nullable": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "flag": {"type": "boolean"},
                "choice": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
                },
            },
        },
    },
}


def _obj(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "x.io/v1",
        "kind": "X",
        "metadata": {"name": "x"},
        "spec": {"name": "abc", **spec},
    }


@pytest.mark.parametrize(
    ("obj", "errors"),
    [
        (_obj(), []),
        ({"metadata": {}}, ["spec: Required value"]),
        ({"spec": {}}, ["spec.name: Required value"]),
        (
            _obj(name=""),
            [
                'spec.name: Invalid value: "": spec.name in body should be at least 1 chars long',
                "spec.name: Invalid value: \"\": spec.name in body should match '^[a-z]+$'",
            ],
        ),
        (_obj(name="abcdef"), ["spec.name: Too long: may not be more than 5 bytes"]),
        # RE2: `$` does not match before a trailing newline.
        (
            _obj(name="abc\n"),
            ["spec.name: Invalid value: \"abc\\n\": spec.name in body should match '^[a-z]+$'"],
        ),
        # Lengths count code points, not bytes.
        (_obj(title="ééé"), []),
        (_obj(title="éééé"), ["spec.title: Too long: may not be more than 3 bytes"]),
        (
            _obj(replicas=0),
            [
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or "
                "equal to 1"
            ],
        ),
        (
            _obj(replicas=11),
            [
                "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or "
                "equal to 10"
            ],
        ),
        (
            _obj(replicas="3"),
            [
                'spec.replicas: Invalid value: "string": spec.replicas in body must be of type '
                'integer: "string"'
            ],
        ),
        (
            _obj(replicas=2.5),
            [
                'spec.replicas: Invalid value: "number": spec.replicas in body must be of type '
                'integer: "number"'
            ],
        ),
        (
            _obj(replicas=True),
            [
                'spec.replicas: Invalid value: "boolean": spec.replicas in body must be of type '
                'integer: "boolean"'
            ],
        ),
        (_obj(replicas=2.0), []),  # an integral float is an integer (kube-openapi's isFloatInt)
        (
            _obj(ratio=0),
            ["spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0"],
        ),
        (
            _obj(ratio=1.0),
            ["spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1"],
        ),
        (_obj(ratio=0.5), []),
        (_obj(step=1.5), []),
        (
            _obj(step=1.2),
            ["spec.step: Invalid value: 1.2: spec.step in body should be a multiple of 0.5"],
        ),
        (_obj(mode="c"), ['spec.mode: Unsupported value: "c": supported values: "a", "b"']),
        (_obj(level=3), ['spec.level: Unsupported value: 3: supported values: "1", "2"']),
        (_obj(level=1), []),
        (
            _obj(tags=[]),
            ["spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items"],
        ),
        (_obj(tags=["a", "b", "c"]), ["spec.tags: Too many: 3: must have at most 2 items"]),
        (_obj(tags=["a", "a"]), ['spec.tags[1]: Duplicate value: "a"']),
        (
            _obj(tags=["a", 1]),
            [
                'spec.tags[1]: Invalid value: "integer": spec.tags[1] in body must be of type '
                'string: "integer"'
            ],
        ),
        (
            _obj(env=[{"name": "A"}, {"name": "B"}, {"name": "A", "value": "x"}]),
            ['spec.env[2]: Duplicate value: {"name":"A"}'],
        ),
        (_obj(env=[{"value": "x"}]), ["spec.env[0].name: Required value"]),
        (_obj(limits={"cpu": 2, "memory": "1Gi"}), []),
        (
            _obj(limits={"cpu": "1x!"}),
            [
                'spec.limits.cpu: Invalid value: "1x!": spec.limits.cpu in body should match '
                "'^[0-9]+[a-zA-Z]*$'"
            ],
        ),
        (
            _obj(limits={"cpu": True}),
            [
                'spec.limits.cpu: Invalid value: "boolean": spec.limits.cpu in body must be of '
                'type integer,string: "boolean"'
            ],
        ),
        (
            _obj(limits={"a": 1, "b": 2, "c": 3}),
            ["spec.limits: Too many: 3: must have at most 2 items"],
        ),
        (_obj(when="2024-01-02T03:04:05Z"), []),
        (_obj(when="2024-01-02t03:04:05.123+02:00"), []),
        (
            _obj(when="yesterday"),
            [
                'spec.when: Invalid value: "yesterday": spec.when in body must be of type '
                'date-time: "yesterday"'
            ],
        ),
        (
            _obj(when="2024-02-30T00:00:00Z"),
            [
                'spec.when: Invalid value: "2024-02-30T00:00:00Z": spec.when in body must be of '
                'type date-time: "2024-02-30T00:00:00Z"'
            ],
        ),
        (
            _obj(ip="10.0.0.256"),
            [
                'spec.ip: Invalid value: "10.0.0.256": spec.ip in body must be of type ipv4: '
                '"10.0.0.256"'
            ],
        ),
        (_obj(note=None), []),
        (
            _obj(flag=None),
            ['spec.flag: Invalid value: "null": spec.flag in body must be of type boolean: "null"'],
        ),
        (_obj(free={"anything": {"goes": [1]}}), []),
        (_obj(choice={"a": "x"}), []),
        (
            _obj(choice={"a": "x", "b": "y"}),
            [
                'spec.choice: Invalid value: {"a":"x","b":"y"}: spec.choice in body must validate '
                "one and only one schema (oneOf)"
            ],
        ),
        # Root metadata is only checked to be an object; the server validates ObjectMeta.
        ({**_obj(), "metadata": {"name": 5, "whatever": []}}, []),
        (
            {**_obj(), "metadata": "x"},
            [
                'metadata: Invalid value: "string": metadata in body must be of type object: '
                '"string"'
            ],
        ),
        ("x", ['<nil>: Invalid value: "string": body must be of type object: "string"']),
        (
            _obj(name=5, replicas=0),
            [
                'spec.name: Invalid value: "integer": spec.name in body must be of type string: '
                '"integer"',
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or "
                "equal to 1",
            ],
        ),
    ],
)
def test_validate(obj: Any, errors: list[str]) -> None:
    assert described(validate(SCHEMA, obj)) == errors


def test_validate_reasons() -> None:
    errors = validate(SCHEMA, _obj(name="abcdef", replicas="x", mode="c", tags=["a", "a", "b"]))
    assert [(e.field, e.reason) for e in errors] == [
        ("spec.name", "FieldValueTooLong"),
        ("spec.replicas", "FieldValueTypeInvalid"),
        ("spec.mode", "FieldValueNotSupported"),
        ("spec.tags", "FieldValueTooMany"),
        ("spec.tags[1]", "FieldValueDuplicate"),
    ]


def test_validate_with_a_path_prefix() -> None:
    spec_schema = SCHEMA["properties"]["spec"]
    assert described(validate(spec_schema, {"name": 1}, path="spec")) == [
        'spec.name: Invalid value: "integer": spec.name in body must be of type string: "integer"'
    ]


def test_validate_ratchets_unchanged_values_on_update() -> None:
    old = _obj(replicas=0, tags=["a", "a"], env=[{"name": "A", "value": "x"}])
    unchanged = copy.deepcopy(old)
    unchanged["spec"]["mode"] = "a"
    assert validate(SCHEMA, unchanged, old_obj=old) == []
    changed = copy.deepcopy(old)
    changed["spec"]["replicas"] = -1
    assert described(validate(SCHEMA, changed, old_obj=old)) == [
        "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal "
        "to 1"
    ]
    # Without the old object (a create), the unchanged problems are reported too.
    assert [e.field for e in validate(SCHEMA, changed)] == ["spec.replicas", "spec.tags[1]"]


# ---------------------------------------------------------------------------
# Nulls, pruning and defaults.
# ---------------------------------------------------------------------------


def test_drop_nulls() -> None:
    obj = _obj(note=None, flag=None, replicas=None, tags=[None], free={"x": None})
    obj["metadata"] = {"labels": None}
    dropped = drop_nulls(SCHEMA, obj)
    assert dropped["spec"] == {
        "name": "abc",
        "note": None,
        "replicas": None,
        "tags": [None],
        "free": {"x": None},
    }
    assert dropped["metadata"] == {"labels": None}  # the server's business
    assert obj["spec"]["flag"] is None  # not mutated


def test_prune() -> None:
    obj: dict[str, Any] = {
        "apiVersion": "x.io/v1",
        "kind": "X",
        "metadata": {"name": "x", "anything": 1},
        "spec": {
            "name": "abc",
            "trainig": {"steps": 1},
            "env": [{"name": "A", "bogus": 1}],
            "limits": {"cpu": 1},
            "free": {"whatever": {"deep": 1}},
            "choice": {"a": "x", "c": "y"},
        },
        "extra": True,
    }
    pruned, removed = prune(SCHEMA, obj)
    assert removed == ["spec.trainig", "spec.env[0].bogus", "spec.choice.c", "extra"]
    assert pruned == {
        "apiVersion": "x.io/v1",
        "kind": "X",
        "metadata": {"name": "x", "anything": 1},
        "spec": {
            "name": "abc",
            "env": [{"name": "A"}],
            "limits": {"cpu": 1},
            "free": {"whatever": {"deep": 1}},
            "choice": {"a": "x"},
        },
    }
    assert "trainig" in obj["spec"]  # not mutated


def test_prune_embedded_resources() -> None:
    schema = {
        "type": "object",
        "properties": {
            "template": {
                "type": "object",
                "x-kubernetes-embedded-resource": True,
                "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}},
            }
        },
    }
    obj = {
        "template": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"x": 1},
            "spec": {"a": "1", "b": 2},
            "c": 3,
        }
    }
    pruned, removed = prune(schema, obj)
    assert removed == ["template.spec.b", "template.c"]
    assert pruned["template"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"x": 1},
        "spec": {"a": "1"},
    }


DEFAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "default": "no"}}},
        "spec": {
            "type": "object",
            "default": {},
            "properties": {
                "outer": {
                    "type": "object",
                    "default": {"given": 1},
                    "properties": {
                        "given": {"type": "integer", "default": 5},
                        "inner": {"type": "string", "default": "x"},
                    },
                },
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "default": {"d": True},
                        "properties": {"v": {"type": "integer", "default": 7}},
                    },
                },
                "map": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"w": {"type": "integer", "default": 8}},
                    },
                },
                "nullable": {"type": "string", "nullable": True, "default": "dflt"},
                "list": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
            },
        },
    },
}


def test_apply_defaults() -> None:
    assert apply_defaults(DEFAULTS_SCHEMA, {}) == {
        "spec": {"outer": {"given": 1, "inner": "x"}, "nullable": "dflt", "list": ["a"]}
    }
    obj: dict[str, Any] = {
        "metadata": {},
        "spec": {
            "outer": None,
            "items": [{}, None, {"v": 1}],
            "map": {"k": {}},
            "nullable": None,
        },
    }
    assert apply_defaults(DEFAULTS_SCHEMA, obj) == {
        "metadata": {},  # never defaulted: the server owns metadata
        "spec": {
            "outer": {"given": 1, "inner": "x"},
            "items": [{"v": 7}, {"d": True, "v": 7}, {"v": 1}],
            "map": {"k": {"w": 8}},
            "nullable": None,  # nullable nulls stay
            "list": ["a"],
        },
    }
    assert obj["spec"]["outer"] is None  # not mutated


def test_defaults_are_copies() -> None:
    first = apply_defaults(DEFAULTS_SCHEMA, {})
    first["spec"]["list"].append("b")
    assert DEFAULTS_SCHEMA["properties"]["spec"]["properties"]["list"]["default"] == ["a"]
    assert apply_defaults(DEFAULTS_SCHEMA, {})["spec"]["list"] == ["a"]


# ---------------------------------------------------------------------------
# CEL rules.
# ---------------------------------------------------------------------------


def _rules_schema(properties: dict[str, Any], *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": properties,
                "x-kubernetes-validations": list(rules),
            },
        },
    }


def _rule_errors(
    properties: dict[str, Any], spec: Any, *rules: dict[str, Any], old: Any = None
) -> list[str]:
    old_obj = None if old is None else {"spec": old}
    errors, warnings = evaluate_rules(_rules_schema(properties, *rules), {"spec": spec}, old_obj)
    assert warnings == []
    return described(errors)


INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}


@pytest.mark.parametrize(
    ("properties", "spec", "rule", "errors"),
    [
        # Integers stay ints, numbers are doubles (even when written as 2).
        ({"n": INT}, {"n": 2}, {"rule": "self.n + 1 == 3"}, []),
        ({"x": NUM}, {"x": 2}, {"rule": "self.x > 1.5 && self.x == 2.0"}, []),
        (
            {"x": NUM},
            {"x": 1},
            {"rule": "false", "messageExpression": "'x is ' + string(self.x)"},
            ['spec: Invalid value: "object": x is 1'],
        ),
        (
            {"x": NUM},
            {"x": 1000000},
            {"rule": "false", "messageExpression": "string(self.x)"},
            ['spec: Invalid value: "object": 1e+06'],
        ),
        (
            {"b": {"type": "boolean"}},
            {"b": True},
            {"rule": "false", "messageExpression": "string(self.b)"},
            ['spec: Invalid value: "object": true'],
        ),
        # Messages: messageExpression, else message, else the rule.
        (
            {"n": INT},
            {"n": 5},
            {"rule": "self.n < 3", "message": "too big"},
            ['spec: Invalid value: "object": too big'],
        ),
        (
            {"n": INT},
            {"n": 5},
            {"rule": "self.n < 3"},
            ['spec: Invalid value: "object": failed rule: self.n < 3'],
        ),
        (
            {"n": INT},
            {"n": 5},
            {"rule": "self.n < 3", "message": "m", "messageExpression": "self.nope"},
            ['spec: Invalid value: "object": m'],
        ),
        (
            {"n": INT},
            {"n": 5},
            {"rule": "self.n < 3", "message": "m", "messageExpression": "''"},
            ['spec: Invalid value: "object": m'],
        ),
        # fieldPath and reason.
        (
            {"n": INT},
            {"n": 5},
            {"rule": "self.n < 3", "message": "m", "fieldPath": ".n"},
            ['spec.n: Invalid value: "object": m'],
        ),
        (
            {"n": INT},
            {"n": 5},
            {
                "rule": "self.n < 3",
                "message": "m",
                "fieldPath": "['n']",
                "reason": "FieldValueForbidden",
            },
            ["spec.n: Forbidden: m"],
        ),
        (
            {"n": INT},
            {"n": 5},
            {"rule": "self.n < 3", "message": "m", "reason": "FieldValueRequired"},
            ["spec: Required value: m"],
        ),
        (
            {"n": INT},
            {"n": 5},
            {"rule": "self.n < 3", "message": "m", "reason": "FieldValueDuplicate"},
            ['spec: Duplicate value: "object": m'],
        ),
        # Runtime errors cel-go raises too are validation errors.
        (
            {"n": INT},
            {},
            {"rule": "self.n > 1", "message": "n must be > 1"},
            ['spec: Invalid value: "object": no such key: n evaluating rule: n must be > 1'],
        ),
        (
            {"n": INT},
            {"n": 0},
            {"rule": "10 / self.n > 1"},
            ['spec: Invalid value: "object": division by zero evaluating rule: 10 / self.n > 1'],
        ),
        (
            {"l": {"type": "array", "items": INT}},
            {"l": []},
            {"rule": "self.l[0] == 1"},
            ['spec: Invalid value: "object": index out of bounds evaluating rule: self.l[0] == 1'],
        ),
        # Names Kubernetes escapes.
        (
            {"x-y": INT, "namespace": STR, "a.b": INT},
            {"x-y": 1, "namespace": "n", "a.b": 2},
            {"rule": "self.x__dash__y == 1 && self.__namespace__ == 'n' && self.a__dot__b == 2"},
            [],
        ),
        # Formats become CEL types.
        (
            {"when": {"type": "string", "format": "date-time"}},
            {"when": "2024-01-02T03:04:05Z"},
            {"rule": "self.when < timestamp('2030-01-01T00:00:00Z')"},
            [],
        ),
        (
            {"d": {"type": "string", "format": "duration"}},
            {"d": "90m"},
            {"rule": "self.d > duration('1h')"},
            [],
        ),
        (
            {"io": {"x-kubernetes-int-or-string": True}},
            {"io": "50%"},
            {"rule": "self.io == '50%'"},
            [],
        ),
        ({"io": {"x-kubernetes-int-or-string": True}}, {"io": 50}, {"rule": "self.io == 50"}, []),
        # Maps expose every key; preserve-unknown objects none.
        (
            {"m": {"type": "object", "additionalProperties": INT}},
            {"m": {"a.b/c": 1}},
            {"rule": "self.m['a.b/c'] == 1"},
            [],
        ),
        (
            {"f": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            {"f": {"a": 1}},
            {"rule": "!has(self.f.a)"},
            [],
        ),
        # The Kubernetes string and list extensions devcluster adds to celpy.
        (
            {"s": STR},
            {"s": "A,b"},
            {"rule": "self.s.lowerAscii() == 'a,b' && self.s.upperAscii() == 'A,B'"},
            [],
        ),
        (
            {"s": STR},
            {"s": "a,b"},
            {"rule": "self.s.split(',') == ['a', 'b'] && ['a', 'b'].join('-') == 'a-b'"},
            [],
        ),
        (
            {"s": STR},
            {"s": " ab "},
            {"rule": "self.s.trim().indexOf('b') == 1 && self.s.lastIndexOf(' ') == 3"},
            [],
        ),
        (
            {"l": {"type": "array", "items": INT}},
            {"l": [1, 2, 2]},
            {"rule": "self.l.isSorted() && self.l.indexOf(2) == 1"},
            [],
        ),
        # RE2 semantics in matches().
        ({"s": STR}, {"s": "a\n"}, {"rule": "!self.s.matches('^a$')"}, []),
    ],
)
def test_evaluate_rules(
    properties: dict[str, Any], spec: Any, rule: dict[str, Any], errors: list[str]
) -> None:
    assert _rule_errors(properties, spec, rule) == errors


def test_rules_run_on_list_items_and_map_values_but_not_on_nulls() -> None:
    item_rule = {"rule": "self.size() <= 2", "message": "too long"}
    schema = _rules_schema(
        {
            "l": {"type": "array", "items": {**STR, "x-kubernetes-validations": [item_rule]}},
            "m": {
                "type": "object",
                "additionalProperties": {**STR, "x-kubernetes-validations": [item_rule]},
            },
            "n": {**STR, "nullable": True, "x-kubernetes-validations": [item_rule]},
        }
    )
    errors, _ = evaluate_rules(
        schema, {"spec": {"l": ["ok", "long"], "m": {"k": "long"}, "n": None}}
    )
    assert described(errors) == [
        'spec.l[1]: Invalid value: "string": too long',
        'spec.m.k: Invalid value: "string": too long',
    ]


def test_root_rules_see_name_and_generate_name_only() -> None:
    schema = {
        "type": "object",
        "properties": {"metadata": {"type": "object"}},
        "x-kubernetes-validations": [
            {
                "rule": "self.metadata.name.startsWith('a') && !has(self.metadata.labels)",
                "message": "m",
            }
        ],
    }
    assert evaluate_rules(schema, {"metadata": {"name": "ab", "labels": {"x": "y"}}}) == ([], [])
    errors, _ = evaluate_rules(schema, {"metadata": {"name": "b"}})
    assert described(errors) == ['<nil>: Invalid value: "object": m']


def test_transition_rules_need_an_old_value() -> None:
    immutable = {"rule": "self == oldSelf", "message": "is immutable"}
    properties = {"n": {**INT, "x-kubernetes-validations": [immutable]}}
    assert _rule_errors(properties, {"n": 1}) == []  # create: not evaluated
    assert _rule_errors(properties, {"n": 1}, old={"n": 1}) == []
    assert _rule_errors(properties, {"n": 2}, old={"n": 1}) == [
        'spec.n: Invalid value: "integer": is immutable'
    ]
    assert _rule_errors(properties, {"n": 2}, old={}) == []  # no old value of the node


def test_transition_rules_on_list_map_items_correlate_by_key() -> None:
    item = {
        "type": "object",
        "properties": {"name": STR, "value": STR},
        "x-kubernetes-validations": [{"rule": "self.value == oldSelf.value", "message": "frozen"}],
    }
    env = {
        "type": "array",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
    }
    old = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    reordered = {
        "env": [
            {"name": "B", "value": "2"},
            {"name": "A", "value": "1"},
            {"name": "C", "value": "3"},
        ]
    }
    assert _rule_errors({"env": env}, reordered, old=old) == []
    changed = {"env": [{"name": "B", "value": "9"}]}
    assert _rule_errors({"env": env}, changed, old=old) == [
        'spec.env[0]: Invalid value: "object": frozen'
    ]


def test_rules_ratchet_unchanged_nodes_on_update() -> None:
    properties = {
        "n": {**INT, "x-kubernetes-validations": [{"rule": "self < 3", "message": "small"}]}
    }
    assert _rule_errors(properties, {"n": 5}, old={"n": 5}) == []
    assert _rule_errors(properties, {"n": 6}, old={"n": 5}) == [
        'spec.n: Invalid value: "integer": small'
    ]


def test_rules_celpy_cannot_run_are_warnings() -> None:
    schema = _rules_schema(
        {"q": STR},
        {"rule": "quantity(self.q).isGreaterThan(quantity('1'))", "message": "q"},
        {"rule": "self.?q.orValue('') == ''"},
        {"rule": "self.q", "message": "not a bool"},
        {"rule": "false", "message": "fallback", "messageExpression": "'x: ' + self.q.format([1])"},
    )
    errors, warnings = evaluate_rules(schema, {"spec": {"q": "2"}})
    assert described(errors) == ['spec: Invalid value: "object": fallback']
    assert warnings[0] == (
        "x-kubernetes-validations rule at spec (\"quantity(self.q).isGreaterThan(quantity('1'))\") "
        "was not enforced: devcluster's CEL engine (celpy) cannot evaluate it: undeclared "
        "reference to 'isGreaterThan'"
    )
    assert warnings[1].startswith(
        "x-kubernetes-validations rule at spec (\"self.?q.orValue('') == ''\") was not enforced: "
        "devcluster's CEL engine (celpy) cannot compile it: "
    )
    assert warnings[2] == (
        "x-kubernetes-validations rule at spec ('self.q') was not enforced: it evaluated to "
        "StringType, not a bool"
    )
    assert warnings[3] == (
        "x-kubernetes-validations messageExpression at spec (\"'x: ' + self.q.format([1])\") was "
        "not used: devcluster's CEL engine (celpy) cannot evaluate it: undeclared reference to "
        "'format'"
    )
    assert len(warnings) == 4
    assert cel_compile_warnings(schema) == [
        warnings[1].replace("was not enforced", "will not be enforced")
    ]


def test_bad_regexps_in_rules_are_warnings() -> None:
    schema = _rules_schema({"s": STR}, {"rule": "self.s.matches('[')"})
    assert evaluate_rules(schema, {"spec": {"s": "a"}}) == (
        [],
        [
            "x-kubernetes-validations rule at spec (\"self.s.matches('[')\") was not enforced: "
            "devcluster's CEL engine (celpy) cannot evaluate it: match error: missing ]: ["
        ],
    )


def test_warnings_are_not_repeated_for_every_item() -> None:
    rule = {"rule": "quantity(self) == quantity('1')"}
    schema = _rules_schema(
        {"l": {"type": "array", "items": {**STR, "x-kubernetes-validations": [rule]}}}
    )
    _, warnings = evaluate_rules(schema, {"spec": {"l": ["1", "2", "3"]}})
    assert warnings == [
        "x-kubernetes-validations rule at spec.l[*] (\"quantity(self) == quantity('1')\") was "
        "not enforced: devcluster's CEL engine (celpy) cannot evaluate it: undeclared reference "
        "to 'quantity'"
    ]


# ---------------------------------------------------------------------------
# Structural schemas.
# ---------------------------------------------------------------------------


def _problems(prop: dict[str, Any]) -> list[str]:
    return structural_problems({"type": "object", "properties": {"a": prop}})


P = "openAPIV3Schema.properties[a]"


@pytest.mark.parametrize(
    ("prop", "problems"),
    [
        ({"type": "string"}, []),
        (
            {
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
            },
            [],
        ),
        ({"x-kubernetes-preserve-unknown-fields": True}, []),
        ({}, [f"{P}.type: Required value: must not be empty for specified object fields"]),
        (
            {"type": "strng"},
            [
                f'{P}.type: Unsupported value: "strng": supported values: "array", "boolean", '
                '"integer", "number", "object", "string"'
            ],
        ),
        (
            {
                "type": "object",
                "properties": {"b": {"type": "string"}},
                "additionalProperties": {"type": "string"},
            },
            [
                f"{P}.additionalProperties: Forbidden: additionalProperties and properties are "
                "mutual exclusive"
            ],
        ),
        (
            {"type": "object", "additionalProperties": False},
            [
                f"{P}.additionalProperties: Forbidden: additionalProperties: false is not allowed "
                "in a structural schema (unknown fields are pruned)"
            ],
        ),
        (
            {"type": "string", "properties": {}},
            [f'{P}.properties: Forbidden: must be empty for type "string"'],
        ),
        ({"type": "array"}, [f"{P}.items: Required value: must be specified"]),
        (
            {"type": "array", "items": [{"type": "string"}]},
            [f"{P}.items: Forbidden: items must be a schema object and not an array"],
        ),
        (
            {"type": "string", "x-kubernetes-int-or-string": True},
            [
                f'{P}.type: Invalid value: "string": must be empty if x-kubernetes-int-or-string '
                "is true"
            ],
        ),
        (
            {"type": "object", "x-kubernetes-preserve-unknown-fields": False},
            [
                f"{P}.x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or "
                "undefined"
            ],
        ),
        (
            {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            [
                f"{P}.uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime "
                "complexity becomes quadratic"
            ],
        ),
        (
            {"$ref": "#/definitions/x"},
            [
                f"{P}.$ref: Forbidden: must not be used in a structural schema",
                f"{P}.type: Required value: must not be empty for specified object fields",
            ],
        ),
        (
            {
                "type": "array",
                "items": {"type": "object", "properties": {"k": {"type": "string"}}},
                "x-kubernetes-list-type": "map",
            },
            [
                f"{P}.x-kubernetes-list-map-keys: Required value: must not be empty if "
                'x-kubernetes-list-type is "map"'
            ],
        ),
        (
            {
                "type": "array",
                "items": {"type": "object", "properties": {"k": {"type": "string"}}},
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["k"],
            },
            [
                f"{P}.items.properties[k]: Required value: list map keys must be required or have "
                "a default value"
            ],
        ),
        (
            {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-map-keys": ["k"]},
            [
                f"{P}.x-kubernetes-list-map-keys: Forbidden: must only be used if "
                'x-kubernetes-list-type is "map"'
            ],
        ),
        (
            {"type": "integer", "minimum": 1, "default": 0},
            [
                f"{P}.default: Invalid value: 0: default in body should be greater than or equal "
                "to 1"
            ],
        ),
        (
            {"type": "object", "properties": {"b": {"type": "string"}}, "default": {"c": 1}},
            [f'{P}.default: Forbidden: unknown field "default.c"'],
        ),
        (
            {"type": "string", "pattern": "(?=x)"},
            [
                f'{P}.pattern: Invalid value: "(?=x)": must be a valid regular expression, but '
                "isn't: invalid perl operator: (?="
            ],
        ),
        (
            {"type": "string", "anyOf": [{"type": "string", "minLength": 1}]},
            [
                f"{P}.anyOf[0].type: Forbidden: must not be used inside value validations (allOf, "
                "anyOf, oneOf, not)"
            ],
        ),
        (
            {
                "type": "string",
                "x-kubernetes-validations": [{"rule": ""}, {"rule": "true", "reason": "Bad"}],
            },
            [
                f"{P}.x-kubernetes-validations[0].rule: Required value: rule is not specified",
                f'{P}.x-kubernetes-validations[1].reason: Unsupported value: "Bad": supported '
                'values: "FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", '
                '"FieldValueDuplicate"',
            ],
        ),
    ],
)
def test_structural_problems(prop: dict[str, Any], problems: list[str]) -> None:
    assert _problems(prop) == problems


def test_structural_root() -> None:
    assert structural_problems({"type": "string"}) == [
        'openAPIV3Schema.type: Invalid value: "string": must be "object" at the root'
    ]
    assert structural_problems([], path="spec.versions[0].schema.openAPIV3Schema") == [
        "spec.versions[0].schema.openAPIV3Schema: Invalid value: []: must be an object"
    ]


@pytest.mark.parametrize("kind", ["LMTrainingJob", "LMService"])
def test_project_crds_are_structural_and_compile(kind: str) -> None:
    assert structural_problems(crd_schema(kind)) == []
    assert cel_compile_warnings(crd_schema(kind)) == []


# ---------------------------------------------------------------------------
# Admission of the project's custom resources.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"), [("LMTrainingJob", "training-job.yaml"), ("LMService", "service.yaml")]
)
def test_examples_admit_cleanly(kind: str, name: str) -> None:
    manifest = example(name)
    result = admit(crd_schema(kind), manifest)
    assert result.errors == []
    assert result.warnings == []
    assert result.unknown_fields == []
    assert result.obj == crd_helpers.apply_defaults(crd_helpers.openapi_schema(kind), manifest)
    assert manifest == example(name)  # not mutated


def test_training_job_defaults() -> None:
    manifest = example("training-job.yaml")
    del manifest["spec"]["training"]["steps"]
    manifest["spec"].pop("autoscaling", None)
    obj = admit(crd_schema("LMTrainingJob"), manifest).obj
    assert obj["spec"]["training"]["steps"] == 1000
    assert obj["spec"]["autoscaling"] == {
        "policy": "None",
        "minEfficiency": 0.7,
        "intervalSeconds": 30,
        "cooldownSeconds": 120,
        "pendingTimeoutSeconds": 60,
        "backoffSeconds": 600,
    }
    assert obj["spec"]["data"]["validationFraction"] == 0.01


def test_replicas_above_max_replicas() -> None:
    manifest = example("training-job.yaml")
    manifest["spec"]["replicas"] = 5
    result = admit(crd_schema("LMTrainingJob"), manifest)
    assert described(result.errors) == [
        'spec: Invalid value: "object": spec.elastic.maxReplicas (3) must be >= spec.replicas (5)'
    ]
    assert result.errors[0].field == "spec"
    assert result.errors[0].reason == "FieldValueInvalid"
    assert result.errors[0].body() == (
        'Invalid value: "object": spec.elastic.maxReplicas (3) must be >= spec.replicas (5)'
    )


def test_unknown_fields_are_pruned_with_warnings() -> None:
    manifest = example("training-job.yaml")
    manifest["spec"]["trainig"] = {"steps": 5}
    manifest["spec"]["worker"]["env"] = [{"name": "A", "value": "1", "vaule": "x"}]
    result = admit(crd_schema("LMTrainingJob"), manifest)
    assert result.errors == []
    # In document order (trainig was added last).
    assert result.warnings == [
        'unknown field "spec.worker.env[0].vaule"',
        'unknown field "spec.trainig"',
    ]
    assert "trainig" not in result.obj["spec"]
    assert result.strict_decoding_error is None


def test_unknown_fields_with_strict_field_validation() -> None:
    manifest = example("training-job.yaml")
    manifest["spec"]["trainig"] = {"steps": 5}
    result = admit(crd_schema("LMTrainingJob"), manifest, strict=True)
    assert described(result.errors) == ['spec.trainig: Forbidden: unknown field "spec.trainig"']
    assert result.warnings == []
    assert result.strict_decoding_error == 'strict decoding error: unknown field "spec.trainig"'


def test_blocking_errors_skip_cel() -> None:
    manifest = example("training-job.yaml")
    manifest["spec"]["replicas"] = "x"
    manifest["spec"]["training"]["precision"] = "fp8"
    manifest["spec"]["elastic"]["maxReplicas"] = 1  # would fail a CEL rule
    result = admit(crd_schema("LMTrainingJob"), manifest)
    assert described(result.errors) == [
        'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: '
        '"string"',
        'spec.training.precision: Unsupported value: "fp8": supported values: "auto", "fp32", '
        '"bf16", "fp16"',
        NOT_CHECKED,
    ]


def test_non_blocking_errors_still_run_cel() -> None:
    manifest = example("training-job.yaml")
    manifest["spec"]["replicas"] = 0
    manifest["metadata"]["name"] = "Bad_Name"
    manifest["spec"]["data"]["path"] = "../etc"
    result = admit(crd_schema("LMTrainingJob"), manifest)
    assert described(result.errors) == [
        "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal "
        "to 1",
        '<nil>: Invalid value: "object": metadata.name (Bad_Name) must start with a lowercase '
        "letter and contain only lowercase letters, digits and '-'",
        'spec: Invalid value: "object": spec.replicas (0) must be >= spec.elastic.minReplicas (1)',
        "spec.data.path: Invalid value: \"object\": must not contain '..' segments (got '../etc')",
    ]


def test_nulls_and_integral_floats_are_normalized() -> None:
    manifest = example("training-job.yaml")
    manifest["spec"]["training"] = None
    manifest["spec"]["replicas"] = 2.0
    result = admit(crd_schema("LMTrainingJob"), manifest)
    assert result.errors == []
    assert result.obj["spec"]["training"]["steps"] == 1000
    assert result.obj["spec"]["replicas"] == 2
    assert type(result.obj["spec"]["replicas"]) is int


def test_updates_ratchet_but_changes_are_validated() -> None:
    schema = crd_schema("LMTrainingJob")
    old = admit(schema, example("training-job.yaml")).obj
    old["spec"]["data"]["path"] = "../stored-before-the-rule-existed"
    update = copy.deepcopy(old)
    update["status"] = {"phase": "Running"}
    assert admit(schema, update, old_obj=old).errors == []
    update["spec"]["data"]["path"] = "../changed"
    assert described(admit(schema, update, old_obj=old).errors) == [
        "spec.data.path: Invalid value: \"object\": must not contain '..' segments (got "
        "'../changed')"
    ]


@settings(max_examples=20)
@given(training_jobs())
def test_valid_training_jobs_admit_cleanly(manifest: dict[str, Any]) -> None:
    kind = "LMTrainingJob"
    result = admit(crd_schema(kind), manifest)
    assert result.errors == []
    assert result.warnings == []
    assert result.obj == crd_helpers.apply_defaults(crd_helpers.openapi_schema(kind), manifest)


@settings(max_examples=20)
@given(services())
def test_valid_services_admit_cleanly(manifest: dict[str, Any]) -> None:
    result = admit(crd_schema("LMService"), manifest)
    assert result.errors == []
    assert result.warnings == []
