"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devcluster.patch import (
    JSON_PATCH_FAILURE_MESSAGE,
    MAX_JSON_PATCH_OPERATIONS,
    MERGE_KEYS,
    MalformedPatchError,
    PatchError,
    PatchTestFailed,
    PatchTooLargeError,
    json_equal,
    json_merge_patch,
    json_patch,
    merge_keys_for,
    merge_patch_diff,
    parse_json_pointer,
    strategic_merge_patch,
    supports_strategic_merge,
)

# JSON values without booleans or floats, so that Python's == (1 == True == 1.0) and
# JSON equality agree in the properties below.
json_scalars = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=3), json_values, max_size=4)


def test_json_equal() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal(0, False)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal([1], [1, 2])
    assert not json_equal("1", 1)


# ---------------------------------------------------------------------------
# RFC 7386.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "patch", "result"),
    [  # RFC 7386, Appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_json_merge_patch_rfc_examples(original: Any, patch: Any, result: Any) -> None:
    assert json_merge_patch(original, patch) == result


def test_json_merge_patch_does_not_share_values() -> None:
    original = {"keep": {"deep": [1]}, "change": {"x": 1}}
    patch = {"change": {"y": [2]}}
    result = json_merge_patch(original, patch)
    result["keep"]["deep"].append(9)
    result["change"]["y"].append(9)
    assert original == {"keep": {"deep": [1]}, "change": {"x": 1}}
    assert patch == {"change": {"y": [2]}}


def _without_null_members(value: Any) -> Any:
    """A merge patch cannot set an object member to null: leave those out of targets."""
    if isinstance(value, dict):
        return {k: _without_null_members(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_null_members(v) for v in value]
    return value


@given(json_values, json_values)
def test_merge_patch_of_a_diff_reproduces_the_target(original: Any, target: Any) -> None:
    target = _without_null_members(target)
    before = copy.deepcopy((original, target))
    assert json_merge_patch(original, merge_patch_diff(original, target)) == target
    assert (original, target) == before


# ---------------------------------------------------------------------------
# JSON pointers and RFC 6902.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pointer", "tokens"),
    [
        ("", []),
        ("/", [""]),
        ("/a/b", ["a", "b"]),
        ("/a~1b/c~0d", ["a/b", "c~d"]),
        ("/~01", ["~1"]),  # ~1 is decoded before ~0
        ("/metadata/annotations/example.com~1x", ["metadata", "annotations", "example.com/x"]),
    ],
)
def test_parse_json_pointer(pointer: str, tokens: list[str]) -> None:
    assert parse_json_pointer(pointer) == tokens


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ("a/b", 'invalid JSON pointer "a/b": must be "" or start with "/"'),
        ("/a~2", 'invalid JSON pointer "/a~2": "~" must be followed by "0" or "1"'),
        ("/a~", 'invalid JSON pointer "/a~": "~" must be followed by "0" or "1"'),
        (3, "a JSON pointer must be a string, got number"),
    ],
)
def test_parse_json_pointer_errors(pointer: Any, message: str) -> None:
    with pytest.raises(PatchError) as caught:
        parse_json_pointer(pointer)
    assert str(caught.value) == message


def _op(op: str, path: str, **rest: Any) -> dict[str, Any]:
    return {"op": op, "path": path, **rest}


@pytest.mark.parametrize(
    ("document", "operations", "result"),
    [  # RFC 6902, Appendix A
        ({"foo": "bar"}, [_op("add", "/baz", value="qux")], {"baz": "qux", "foo": "bar"}),
        (
            {"foo": ["bar", "baz"]},
            [_op("add", "/foo/1", value="qux")],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"baz": "qux", "foo": "bar"}, [_op("remove", "/baz")], {"foo": "bar"}),
        ({"foo": ["bar", "qux", "baz"]}, [_op("remove", "/foo/1")], {"foo": ["bar", "baz"]}),
        (
            {"baz": "qux", "foo": "bar"},
            [_op("replace", "/baz", value="boo")],
            {"baz": "boo", "foo": "bar"},
        ),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [_op("move", "/qux/thud", **{"from": "/foo/waldo"})],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [_op("move", "/foo/3", **{"from": "/foo/1"})],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        (
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [_op("test", "/baz", value="qux"), _op("test", "/foo/1", value=2)],
            {"baz": "qux", "foo": ["a", 2, "c"]},
        ),
        (
            {"foo": "bar"},
            [_op("add", "/child", value={"grandchild": {}})],
            {"foo": "bar", "child": {"grandchild": {}}},
        ),
        (
            {"foo": "bar"},
            [_op("add", "/baz", value="qux", xyz=123)],
            {"foo": "bar", "baz": "qux"},
        ),
        ({"/": 9, "~1": 10}, [_op("test", "/~01", value=10)], {"/": 9, "~1": 10}),
        (
            {"foo": ["bar"]},
            [_op("add", "/foo/-", value=["abc", "def"])],
            {"foo": ["bar", ["abc", "def"]]},
        ),
        # More.
        ({"a": 1}, [_op("replace", "", value=[1])], [1]),
        ({"a": 1}, [_op("add", "", value={"b": 2})], {"b": 2}),
        ({"a": [1, 2]}, [_op("copy", "/b", **{"from": "/a"})], {"a": [1, 2], "b": [1, 2]}),
        ({"a": [1, 2]}, [_op("replace", "/a/0", value=9)], {"a": [9, 2]}),
        ({"a": [1, 2]}, [_op("add", "/a/2", value=3)], {"a": [1, 2, 3]}),
        ({"a": 1}, [_op("move", "/a", **{"from": "/a"})], {"a": 1}),
        ({"a": 1}, [_op("test", "/b", value=None)], {"a": 1}),  # missing == null, as k8s
        ({"a": None}, [_op("test", "/a", value=None)], {"a": None}),
        ({"a": 1.0}, [_op("test", "/a", value=1)], {"a": 1.0}),
        ({"": {"x": 1}}, [_op("remove", "//x")], {"": {}}),
    ],
)
def test_json_patch(document: Any, operations: list[dict[str, Any]], result: Any) -> None:
    assert json_patch(document, operations) == result


def test_kopf_first_write() -> None:
    """kopf guards its patches with a test of the resourceVersion it last saw."""
    body = {"metadata": {"name": "x", "resourceVersion": "41"}, "spec": {}}
    ops = [
        _op("test", "/metadata/resourceVersion", value="41"),
        _op("add", "/metadata/finalizers", value=["kopf.zalando.org/KopfFinalizerMarker"]),
        _op("add", "/metadata/annotations", value={"kopf.zalando.org/last-handled": "{}"}),
    ]
    patched = json_patch(body, ops)
    assert patched["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
    with pytest.raises(PatchTestFailed) as caught:
        json_patch({"metadata": {"resourceVersion": "42"}}, ops)
    assert caught.value.http_status == 422
    assert str(caught.value) == (
        'testing value /metadata/resourceVersion failed: it is "42", expected "41"'
    )


@pytest.mark.parametrize(
    ("document", "operations", "error", "message"),
    [
        (
            {"baz": "qux"},
            [_op("test", "/baz", value="bar")],
            PatchTestFailed,
            'testing value /baz failed: it is "qux", expected "bar"',
        ),
        (
            {"/": 9, "~1": 10},
            [_op("test", "/~01", value="10")],
            PatchTestFailed,
            'testing value /~01 failed: it is 10, expected "10"',
        ),
        (
            {"a": 1},
            [_op("test", "/a", value=True)],
            PatchTestFailed,
            "testing value /a failed: it is 1, expected true",
        ),
        (
            {"a": 1},
            [_op("test", "/x/y", value=None)],
            PatchTestFailed,
            "testing value /x/y failed: operation 0 (test /x/y): /x does not exist",
        ),
        (
            {"foo": "bar"},
            [_op("add", "/baz/bat", value="qux")],
            PatchError,
            "operation 0 (add /baz/bat): /baz does not exist",
        ),
        ({"a": 1}, [_op("remove", "/b")], PatchError, "operation 0 (remove /b): /b does not exist"),
        (
            {"a": 1},
            [_op("replace", "/b", value=2)],
            PatchError,
            "operation 0 (replace /b): /b does not exist",
        ),
        (
            {"a": 1},
            [_op("remove", "")],
            PatchError,
            "operation 0 (remove ): cannot remove the whole document",
        ),
        (
            {"a": [1]},
            [_op("add", "/a/2", value=0)],
            PatchError,
            "operation 0 (add /a/2): index 2 is out of bounds (array length 1)",
        ),
        (
            {"a": [1]},
            [_op("remove", "/a/1")],
            PatchError,
            "operation 0 (remove /a/1): index 1 is out of bounds (array length 1)",
        ),
        (
            {"a": [1]},
            [_op("remove", "/a/-")],
            PatchError,
            'operation 0 (remove /a/-): "-" is not an array index',
        ),
        (
            {"a": [1, 2]},
            [_op("replace", "/a/01", value=0)],
            PatchError,
            'operation 0 (replace /a/01): "01" is not an array index',
        ),
        (
            {"a": [1]},
            [_op("add", "/a/x", value=0)],
            PatchError,
            'operation 0 (add /a/x): "x" is not an array index',
        ),
        (
            {"a": "s"},
            [_op("add", "/a/b", value=0)],
            PatchError,
            "operation 0 (add /a/b): /a is a string, not an object or array",
        ),
        (
            {"a": {"b": 1}},
            [_op("move", "/a/b/c", **{"from": "/a"})],
            PatchError,
            "operation 0 (move /a/b/c): cannot move a value into one of its own children",
        ),
        (
            {"a": 1},
            [_op("copy", "/b", **{"from": "/nope"})],
            PatchError,
            "operation 0 (copy /b): /nope does not exist",
        ),
        ({"a": 1}, [_op("add", "/b")], PatchError, 'operation 0 (add /b): missing "value"'),
        ({"a": 1}, [_op("move", "/b")], PatchError, 'operation 0 (move /b): missing "from"'),
        ({"a": 1}, [{"op": "add", "value": 1}], PatchError, 'operation 0 (add): missing "path"'),
        (
            {"a": 1},
            [_op("explode", "/a")],
            PatchError,
            'operation 0: unknown op "explode" (expected add, remove, replace, move, copy or test)',
        ),
        (
            {"a": 1},
            [{"path": "/a"}],
            PatchError,
            'operation 0: unknown op "None" (expected add, remove, replace, move, copy or test)',
        ),
        (
            {"a": 1},
            [_op("add", "a", value=1)],
            PatchError,
            'operation 0 (add a): invalid JSON pointer "a": must be "" or start with "/"',
        ),
        (
            {"a": 1},
            [_op("add", "/b", value=1), _op("remove", "/c")],
            PatchError,
            "operation 1 (remove /c): /c does not exist",
        ),
        (
            {"a": 1},
            {"op": "add", "path": "/b", "value": 1},
            MalformedPatchError,
            "a JSON patch must be a JSON array of operations, got object",
        ),
        ({"a": 1}, ["add"], MalformedPatchError, "operation 0 must be a JSON object, got string"),
    ],
)
def test_json_patch_errors(
    document: Any, operations: Any, error: type[PatchError], message: str
) -> None:
    with pytest.raises(error) as caught:
        json_patch(document, operations)
    assert type(caught.value) is error
    assert str(caught.value) == message


def test_patch_error_statuses() -> None:
    assert PatchError("x").http_status == 422
    assert PatchTestFailed("x").http_status == 422
    assert MalformedPatchError("x").http_status == 400
    assert PatchTooLargeError("x").http_status == 413
    assert JSON_PATCH_FAILURE_MESSAGE == (
        "the server rejected our request due to an error in our request"
    )
    with pytest.raises(PatchTooLargeError, match="maximum operations in a JSON patch is 10000"):
        json_patch({}, [_op("test", "", value={})] * (MAX_JSON_PATCH_OPERATIONS + 1))


def test_json_patch_is_all_or_nothing_and_copies() -> None:
    document = {"a": [1], "b": {"c": 1}}
    value = {"deep": [1]}
    result = json_patch(
        document, [_op("add", "/v", value=value), _op("copy", "/w", **{"from": "/b"})]
    )
    result["v"]["deep"].append(2)
    result["w"]["c"] = 2
    assert value == {"deep": [1]}
    assert result["b"] == {"c": 1}
    with pytest.raises(PatchError):
        json_patch(document, [_op("add", "/x", value=1), _op("remove", "/nope")])
    assert document == {"a": [1], "b": {"c": 1}}


_paths = st.lists(st.sampled_from(["a", "b", "0", "1", "-", ""]), max_size=3).map(
    lambda parts: "".join("/" + p for p in parts)
)
_operations = st.lists(
    st.fixed_dictionaries(
        {
            "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]),
            "path": _paths,
        },
        optional={"value": json_values, "from": _paths},
    ),
    max_size=4,
)


@given(json_values, _operations)
def test_json_patch_never_mutates_its_inputs(document: Any, operations: list[Any]) -> None:
    before = copy.deepcopy((document, operations))
    try:
        result = json_patch(document, operations)
    except PatchError:
        result = None
    assert (document, operations) == before
    if isinstance(result, dict | list):  # nor shares anything with them
        _scramble(result)
        assert (document, operations) == before


def _scramble(value: Any) -> None:
    if isinstance(value, dict):
        for child in list(value.values()):
            _scramble(child)
        value["scrambled"] = True
    elif isinstance(value, list):
        for child in list(value):
            _scramble(child)
        value.append("scrambled")


@given(json_objects, json_objects)
def test_json_patch_applies_the_diffs_of_the_jsonpatch_library(source: Any, target: Any) -> None:
    operations = jsonpatch.make_patch(source, target).patch
    assert json_patch(source, operations) == target


# ---------------------------------------------------------------------------
# Strategic merge patch.
# ---------------------------------------------------------------------------

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web",
        "labels": {"app": "web", "tier": "front"},
        "finalizers": ["a.io/x", "b.io/y"],
        "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "rs"}],
    },
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "app:1",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "name": "http"}],
            },
            {"name": "sidecar", "image": "proxy:1"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "tolerations": [{"key": "k1", "operator": "Exists"}],
        "nodeSelector": {"disk": "ssd"},
    },
    "status": {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Initialized", "status": "True"},
        ],
        "containerStatuses": [{"name": "main", "ready": True}, {"name": "sidecar", "ready": True}],
    },
}
MAIN = POD["spec"]["containers"][0]
SIDECAR = POD["spec"]["containers"][1]


def _at(document: dict[str, Any], dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize(
    ("patch", "where", "expected"),
    [
        # Maps merge; null deletes a key.
        (
            {"metadata": {"labels": {"tier": None, "env": "prod"}}},
            "metadata.labels",
            {"app": "web", "env": "prod"},
        ),
        ({"metadata": {"labels": {"missing": None}}}, "metadata.labels", POD["metadata"]["labels"]),
        # Lists of objects merge by their merge key.
        (
            {"spec": {"containers": [{"name": "sidecar", "image": "proxy:2"}]}},
            "spec.containers",
            [MAIN, {"name": "sidecar", "image": "proxy:2"}],
        ),
        # A new item goes before the server items after the last known patch item.
        (
            {"spec": {"containers": [{"name": "debug", "image": "busybox"}]}},
            "spec.containers",
            [{"name": "debug", "image": "busybox"}, MAIN, SIDECAR],
        ),
        (
            {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                        }
                    ]
                }
            },
            "spec.containers",
            [
                {
                    **MAIN,
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "B", "value": "3"},
                        {"name": "C", "value": "4"},
                    ],
                },
                SIDECAR,
            ],
        ),
        (
            {"spec": {"containers": [{"name": "main", "ports": [{"containerPort": 8080}]}]}},
            "spec.containers",
            [
                {**MAIN, "ports": [{"containerPort": 8080}, {"containerPort": 80, "name": "http"}]},
                SIDECAR,
            ],
        ),
        (
            {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "env": [{"name": "A", "value": None, "valueFrom": {"x": 1}}],
                        }
                    ]
                }
            },
            "spec.containers",
            [
                {
                    **MAIN,
                    "env": [{"name": "A", "valueFrom": {"x": 1}}, {"name": "B", "value": "2"}],
                },
                SIDECAR,
            ],
        ),
        # Patch items keep the patch's order; server-only items keep theirs.
        (
            {"spec": {"containers": [{"name": "sidecar"}, {"name": "main"}]}},
            "spec.containers",
            [SIDECAR, MAIN],
        ),
        # $patch directives on list items.
        (
            {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}},
            "spec.containers",
            [MAIN],
        ),
        (
            {"spec": {"containers": [{"name": "nope", "$patch": "delete"}]}},
            "spec.containers",
            [MAIN, SIDECAR],
        ),
        (
            {
                "spec": {
                    "containers": [
                        {"name": "only", "image": "x", "tty": None},
                        {"$patch": "replace"},
                    ]
                }
            },
            "spec.containers",
            [{"name": "only", "image": "x"}],
        ),
        # $patch directives on maps.
        (
            {"spec": {"nodeSelector": {"$patch": "replace", "zone": "a"}}},
            "spec.nodeSelector",
            {"zone": "a"},
        ),
        ({"spec": {"nodeSelector": {"$patch": "delete"}}}, "spec.nodeSelector", {}),
        # Lists without a merge key are replaced, container statuses included.
        ({"spec": {"tolerations": [{"key": "k2"}]}}, "spec.tolerations", [{"key": "k2"}]),
        (
            {"status": {"containerStatuses": [{"name": "main", "ready": False}]}},
            "status.containerStatuses",
            [{"name": "main", "ready": False}],
        ),
        (
            {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            "status.conditions",
            [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}],
        ),
        (
            {"metadata": {"ownerReferences": [{"uid": "u2", "kind": "Job", "name": "j"}]}},
            "metadata.ownerReferences",
            [
                {"uid": "u2", "kind": "Job", "name": "j"},
                {"uid": "u1", "kind": "ReplicaSet", "name": "rs"},
            ],
        ),
        # Finalizers merge as a set.
        (
            {"metadata": {"finalizers": ["c.io/z", "a.io/x"]}},
            "metadata.finalizers",
            ["c.io/z", "a.io/x", "b.io/y"],
        ),
        (
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/x"]}},
            "metadata.finalizers",
            ["b.io/y"],
        ),
        (
            {
                "metadata": {
                    "$setElementOrder/finalizers": ["b.io/y", "c", "a.io/x"],
                    "finalizers": ["c"],
                }
            },
            "metadata.finalizers",
            ["b.io/y", "c", "a.io/x"],
        ),
        # $setElementOrder orders merging lists.
        (
            {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "main"}],
                    "containers": [{"name": "main", "image": "app:2"}],
                }
            },
            "spec.containers",
            [SIDECAR, {**MAIN, "image": "app:2"}],
        ),
        (
            {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "main"},
                        {"name": "new"},
                        {"name": "sidecar"},
                    ],
                    "containers": [{"name": "new"}],
                }
            },
            "spec.containers",
            [MAIN, {"name": "new"}, SIDECAR],
        ),
        # ... and is accepted and ignored for replaced lists.
        (
            {
                "spec": {
                    "$setElementOrder/tolerations": [{"key": "b"}, {"key": "a"}],
                    "tolerations": [{"key": "a"}, {"key": "b"}],
                }
            },
            "spec.tolerations",
            [{"key": "a"}, {"key": "b"}],
        ),
        # $retainKeys clears the other keys (a volume changing its source).
        (
            {
                "spec": {
                    "volumes": [
                        {
                            "name": "data",
                            "$retainKeys": ["name", "configMap"],
                            "configMap": {"name": "cm"},
                        }
                    ]
                }
            },
            "spec.volumes",
            [{"name": "data", "configMap": {"name": "cm"}}],
        ),
        # New values lose their nulls and directives.
        (
            {
                "spec": {
                    "securityContext": {
                        "runAsUser": 1,
                        "fsGroup": None,
                        "sub": {"$patch": "delete"},
                    }
                }
            },
            "spec.securityContext",
            {"runAsUser": 1, "sub": {}},
        ),
        ({"spec": {"nodeSelector": "oops"}}, "spec.nodeSelector", "oops"),  # type change replaces
    ],
)
def test_strategic_merge_patch_pod(patch: dict[str, Any], where: str, expected: Any) -> None:
    before = copy.deepcopy((POD, patch))
    result = strategic_merge_patch(POD, patch, "Pod")
    assert _at(result, where) == expected
    assert (POD, patch) == before


def test_strategic_merge_patch_leaves_everything_else() -> None:
    result = strategic_merge_patch(POD, {"status": {"phase": "Succeeded"}}, "Pod")
    assert result == {**POD, "status": {**POD["status"], "phase": "Succeeded"}}
    assert strategic_merge_patch(POD, {}, "Pod") == POD
    assert strategic_merge_patch(POD, {"$patch": "delete"}, "Pod") == {}


def test_strategic_merge_patch_other_kinds() -> None:
    service = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    patched = strategic_merge_patch(
        service, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}, "Service"
    )
    assert patched["spec"]["ports"] == [
        {"port": 80, "targetPort": 8080},
        {"port": 443, "targetPort": 8443},
    ]
    account = {"secrets": [{"name": "a"}]}
    patched = strategic_merge_patch(account, {"secrets": [{"name": "b"}]}, "ServiceAccount")
    assert patched["secrets"] == [{"name": "b"}, {"name": "a"}]
    endpoints = {"subsets": [{"addresses": [{"ip": "1.1.1.1"}]}]}
    patched = strategic_merge_patch(
        endpoints, {"subsets": [{"addresses": [{"ip": "2.2.2.2"}]}]}, "Endpoints"
    )
    assert patched["subsets"] == [{"addresses": [{"ip": "2.2.2.2"}]}]
    # A kind without a table (a custom resource) only merges ObjectMeta's lists.
    custom = {"metadata": {"finalizers": ["a"]}, "spec": {"items": [{"name": "a"}]}}
    patched = strategic_merge_patch(
        custom,
        {"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "b"}]}},
        "LMTrainingJob",
    )
    assert patched == {"metadata": {"finalizers": ["b", "a"]}, "spec": {"items": [{"name": "b"}]}}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"spec": {"containers": [{"image": "x"}]}},
            'spec.containers: map: {"image": "x"} does not contain declared merge key: name',
        ),
        (
            {"spec": {"containers": [{"$patch": "delete"}]}},
            'spec.containers: map: {"$patch": "delete"} does not contain declared merge key: name',
        ),
        (
            {"spec": {"containers": [{"$patch": "merge"}]}},
            "merging lists cannot yet be specified in the patch",
        ),
        (
            {"spec": {"containers": [{"$patch": "explode"}]}},
            'unknown patch type: "explode" in map: {"$patch": "explode"}',
        ),
        (
            {"spec": {"nodeSelector": {"$patch": "explode"}}},
            'unknown patch type: "explode" in map: {"$patch": "explode"}',
        ),
        (
            {"spec": {"containers": ["main"]}},
            "spec.containers: list element types are not identical (objects and scalars)",
        ),
        (
            {"metadata": {"finalizers": [["a"]]}},
            "metadata.finalizers: lists of lists cannot be merged",
        ),
        ({"spec": {"$retainKeys": "x"}}, "invalid patch format of retainKeys: it must be a list"),
        (
            {"spec": {"$retainKeys": ["a"], "b": 1}},
            'invalid patch format of retainKeys: "b" is in the patch but not in $retainKeys',
        ),
        (
            {"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}},
            "invalid patch format of primitive list finalizers: it must be a list",
        ),
        (
            {"spec": {"$setElementOrder/containers": "x"}},
            "invalid patch format of setElementOrder list containers",
        ),
        (
            {
                "spec": {
                    "$setElementOrder/containers": [{"name": "main"}],
                    "containers": [{"name": "sidecar"}],
                }
            },
            "the order of the patch list containers does not match its $setElementOrder list",
        ),
    ],
)
def test_strategic_merge_patch_errors(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedPatchError) as caught:
        strategic_merge_patch(POD, patch, "Pod")
    assert str(caught.value) == message
    assert caught.value.http_status == 400


def test_strategic_merge_patch_must_be_an_object() -> None:
    with pytest.raises(MalformedPatchError, match="must be a JSON object, got array"):
        strategic_merge_patch(POD, [], "Pod")  # type: ignore[arg-type]


def test_merge_key_tables() -> None:
    pod = MERGE_KEYS["Pod"]
    for path, key in {
        "spec.containers": "name",
        "spec.containers[].env": "name",
        "spec.containers[].ports": "containerPort",
        "spec.containers[].volumeMounts": "mountPath",
        "spec.initContainers": "name",
        "spec.initContainers[].env": "name",
        "spec.volumes": "name",
        "spec.imagePullSecrets": "name",
        "metadata.ownerReferences": "uid",
        "metadata.finalizers": "",
        "status.conditions": "type",
    }.items():
        assert pod[path] == key, path
    # Kubernetes' PodStatus.containerStatuses has no patch strategy: it is replaced.
    assert "status.containerStatuses" not in pod
    assert MERGE_KEYS["Service"]["spec.ports"] == "port"
    assert MERGE_KEYS["ServiceAccount"]["secrets"] == "name"
    for kind in (
        "Endpoints",
        "ConfigMap",
        "Secret",
        "Namespace",
        "Event",
        "PersistentVolumeClaim",
        "Lease",
    ):
        assert MERGE_KEYS[kind]["metadata.ownerReferences"] == "uid"
        assert supports_strategic_merge(kind)
    assert not supports_strategic_merge("LMTrainingJob")
    assert merge_keys_for("LMTrainingJob") == {
        "metadata.finalizers": "",
        "metadata.ownerReferences": "uid",
    }


pod_patches = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "labels": st.dictionaries(st.sampled_from("abc"), st.none() | st.text(max_size=2))
            },
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "containers": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["main", "sidecar", "new"])},
                        optional={"image": st.text(max_size=2), "$patch": st.just("delete")},
                    ),
                    max_size=3,
                    unique_by=lambda c: c["name"],
                ),
                "tolerations": st.lists(
                    st.fixed_dictionaries({"key": st.text(max_size=2)}), max_size=2
                ),
            },
        ),
    },
)


@given(pod_patches)
def test_strategic_merge_patch_never_mutates_and_keeps_keys_unique(patch: dict[str, Any]) -> None:
    before = copy.deepcopy((POD, patch))
    result = strategic_merge_patch(POD, patch, "Pod")
    assert (POD, patch) == before
    names = [c["name"] for c in result["spec"]["containers"]]
    assert len(names) == len(set(names))
    deleted = {c["name"] for c in patch.get("spec", {}).get("containers", []) if "$patch" in c}
    assert not deleted & set(names)
    _scramble(result)
    assert (POD, patch) == before
