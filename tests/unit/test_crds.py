"""The generated CRDs: in sync with the models, structural, and their CEL rules agree
with the models' Python checks on every object (the API server and `elasticlm
validate` must accept and reject the same manifests, with the same words).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celpy import celtypes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmoperator.api import InvalidResourceError, parse_resource
from lmoperator.api.base import ApiModel, CelRule
from lmoperator.api.common import RESOURCE_NAME_RULES
from lmoperator.api.crd import RESOURCE_KINDS, crd_manifest, render_crds
from lmoperator.api.generate import generated_drift
from lmoperator.cli import main
from tests.unit import strategies
from tests.unit.crd_helpers import (
    DELETE,
    CelEvaluationError,
    apply_defaults,
    cel_failures,
    cel_problems,
    cel_rules_at,
    compile_cel,
    crd,
    describe_cel_failure,
    evaluate_cel,
    iter_schema_nodes,
    openapi_schema,
    openapi_validator,
    patched,
    rule_holds,
    rule_message,
    schema_at,
    schema_errors,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"
KINDS = [r.kind for r in RESOURCE_KINDS]
EXAMPLE_FILES = {
    "LMTrainingJob": "training-job.yaml",
    "LMService": "service.yaml",
    "LMTuningJob": "tuning-job.yaml",
}
# Where each kind's worker settings are: a tuning job's trials are training jobs.
WORKER = {
    "LMTrainingJob": "spec.worker",
    "LMService": "spec.worker",
    "LMTuningJob": "spec.trialTemplate.worker",
}


def example_manifest(kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / EXAMPLE_FILES[kind]).read_text())
    return doc


def model_problems(manifest: dict[str, Any]) -> list[str]:
    """What `parse_resource` (the operator, `elasticlm validate`) says about a manifest."""
    try:
        parse_resource(copy.deepcopy(manifest))
    except InvalidResourceError as exc:
        return exc.problems
    return []


# ---------------------------------------------------------------------------
# The committed CRDs are what the models generate.
# ---------------------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    assert generated_drift(ROOT / "crds", ROOT / "docs" / "api-reference.md") == []


def test_the_charts_crd_templates_match_the_models() -> None:
    chart = ROOT / "charts" / "elasticlm"
    assert generated_drift(ROOT / "crds", ROOT / "docs" / "api-reference.md", chart) == []


def test_crds_check_covers_the_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crds, reference, chart = tmp_path / "crds", tmp_path / "api.md", tmp_path / "chart"
    paths = ["--dir", str(crds), "--reference", str(reference), "--chart", str(chart)]
    assert main(["crds", *paths]) == 0
    template = chart / "templates" / "crds" / RESOURCE_KINDS[0].filename
    assert template.read_text().startswith("{{- if .Values.crds.enabled }}")
    assert main(["crds", "--check", *paths]) == 0
    template.write_text(template.read_text().replace("helm.sh/resource-policy: keep", "x: y"))
    assert main(["crds", "--check", *paths]) == 1
    out, err = capsys.readouterr()
    assert "+    helm.sh/resource-policy: keep" in out
    assert str(chart) in err
    # '' leaves the chart out (a checkout without charts/).
    assert (
        main(["crds", "--check", "--dir", str(crds), "--reference", str(reference), "--chart", ""])
        == 0
    )


def test_crds_check_passes_on_the_committed_crds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--check", "--dir", str(ROOT / "crds")]) == 0
    assert "match the API models" in capsys.readouterr().out


def test_crds_check_fails_after_a_one_byte_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crds", "--dir", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(r.filename for r in RESOURCE_KINDS)
    assert main(["crds", "--check", "--dir", str(tmp_path)]) == 0
    capsys.readouterr()

    target = tmp_path / RESOURCE_KINDS[0].filename
    data = bytearray(target.read_bytes())
    offset = data.index(b"minimum: 1")
    data[offset + len("minimum: ")] = ord("2")
    target.write_bytes(bytes(data))

    assert main(["crds", "--check", "--dir", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "differ from the API models" in err
    assert "-" in out
    assert "minimum: 2" in out  # the diff shows the changed line


def test_crds_check_fails_when_a_file_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crds", "--dir", str(tmp_path)]) == 0
    (tmp_path / RESOURCE_KINDS[1].filename).unlink()
    assert main(["crds", "--check", "--dir", str(tmp_path)]) == 1
    assert "differ from the API models" in capsys.readouterr().err


@pytest.mark.parametrize("resource", RESOURCE_KINDS, ids=lambda r: r.kind)
def test_rendered_yaml_is_the_crd_manifest(resource: Any) -> None:
    text = render_crds()[resource.filename]
    assert text.startswith("# Generated by `elasticlm crds`")
    assert yaml.safe_load(text) == crd_manifest(resource)


# ---------------------------------------------------------------------------
# Structural schemas.
# ---------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def _nodes(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(p, n) for p, n in iter_schema_nodes(openapi_schema(kind)) if "|anyOf" not in p]


def _is_int_or_string(node: dict[str, Any]) -> bool:
    return bool(node.get("x-kubernetes-int-or-string"))


def test_every_node_has_a_type(kind: str) -> None:
    untyped = [
        path
        for path, node in _nodes(kind)
        if "type" not in node
        and not _is_int_or_string(node)
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert untyped == []
    valid = {"object", "array", "string", "integer", "number", "boolean"}
    assert {n["type"] for _, n in _nodes(kind) if "type" in n} <= valid


def test_no_refs_and_no_unions_but_int_or_string(kind: str) -> None:
    def walk(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "oneOf", "allOf", "not", "nullable", "$defs", "definitions"):
                    yield f"{path}: {key}"
                if key == "anyOf" and not node.get("x-kubernetes-int-or-string"):
                    yield f"{path}: anyOf without x-kubernetes-int-or-string"
                if key == "default" or key == "enum":
                    continue  # values, not schemas
                yield from walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                yield from walk(item, f"{path}/{index}")

    assert list(walk(openapi_schema(kind), "")) == []


def test_int_or_string_is_the_kubernetes_form(kind: str) -> None:
    found = [(p, n) for p, n in _nodes(kind) if _is_int_or_string(n)]
    assert found, "resources.requests/limits are int-or-string quantities"
    for path, node in found:
        assert "type" not in node, path
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path


def test_properties_and_additional_properties_exclude_each_other(kind: str) -> None:
    both = [p for p, n in _nodes(kind) if "properties" in n and "additionalProperties" in n]
    assert both == []
    for path, node in _nodes(kind):
        if "additionalProperties" in node:
            assert isinstance(node["additionalProperties"], dict), path
            assert node["type"] == "object", path
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), path


def test_unknown_fields_are_preserved_only_in_pod_templates(kind: str) -> None:
    preserved = [p for p, n in _nodes(kind) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [f"{WORKER[kind]}.podTemplate"]
    assert openapi_schema(kind)["properties"]["metadata"] == {"type": "object"}
    # Every other object says what it holds, so the API server prunes the rest.
    for path, node in _nodes(kind):
        if node.get("type") == "object" and path not in ("metadata", f"{WORKER[kind]}.podTemplate"):
            assert "properties" in node or "additionalProperties" in node, path


def test_every_default_is_valid_for_its_own_node(kind: str) -> None:
    defaults = [(p, n) for p, n in _nodes(kind) if "default" in n]
    assert len(defaults) > 20
    for path, node in defaults:
        value = apply_defaults(node, node["default"])
        assert schema_errors(node, value) == [], path
        assert cel_failures(node, value, defaulted=True) == [], path


def test_defaults_hold_no_nulls(kind: str) -> None:
    def no_nulls(value: Any) -> bool:
        if isinstance(value, dict):
            return all(v is not None and no_nulls(v) for v in value.values())
        if isinstance(value, list):
            return all(v is not None and no_nulls(v) for v in value)
        return value is not None

    for path, node in _nodes(kind):
        if "default" in node:
            assert no_nulls(node["default"]), path


def test_required_fields_are_declared(kind: str) -> None:
    for path, node in _nodes(kind):
        required = node.get("required")
        if required is None:
            continue
        assert required, f"{path}: empty required list"
        assert len(set(required)) == len(required), path
        assert set(required) <= set(node.get("properties") or {}), path
        for name in required:
            # A required field with a default could never be missing: one of them is wrong.
            assert "default" not in node["properties"][name], f"{path}.{name}"


def test_list_map_keys_are_required_or_defaulted(kind: str) -> None:
    lists = [(p, n) for p, n in _nodes(kind) if n.get("x-kubernetes-list-type")]
    assert {p for p, n in lists if n["x-kubernetes-list-type"] == "map"} >= {
        f"{WORKER[kind]}.env",
        "status.conditions",
    }
    for path, node in lists:
        assert node["type"] == "array", path
        assert node["x-kubernetes-list-type"] in ("atomic", "set", "map"), path
        if node["x-kubernetes-list-type"] != "map":
            assert "x-kubernetes-list-map-keys" not in node, path
            continue
        keys = node.get("x-kubernetes-list-map-keys")
        assert keys, path
        items = node["items"]
        assert items["type"] == "object", path
        for key in keys:
            assert key in items["properties"], f"{path}: {key}"
            assert key in items.get("required", []) or "default" in items["properties"][key], (
                f"{path}: map key {key} must be required or defaulted"
            )
            assert items["properties"][key]["type"] in ("string", "integer", "boolean")


def test_lists_and_maps_read_by_cel_are_bounded(kind: str) -> None:
    # cel-go's cost estimator rejects rules that iterate unbounded lists.
    for path, node, rule in cel_rules_at(openapi_schema(kind)):
        for member in re.findall(
            r"self((?:\.\w+)+)\.(?:all|exists|exists_one|filter|map)\(", rule["rule"]
        ):
            target = schema_at(node, member.lstrip("."))
            assert target is not None, (path, member)
            assert "maxItems" in target, f"{path}{member} needs maxItems for {rule['rule']}"


# ---------------------------------------------------------------------------
# Names, subresources, printer columns.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind_", "plural", "singular", "short"),
    [
        ("LMTrainingJob", "lmtrainingjobs", "lmtrainingjob", "lmtj"),
        ("LMService", "lmservices", "lmservice", "lms"),
        ("LMTuningJob", "lmtuningjobs", "lmtuningjob", "lmtune"),
    ],
)
def test_names_group_and_version(kind_: str, plural: str, singular: str, short: str) -> None:
    manifest = crd(kind_)
    assert manifest["apiVersion"] == "apiextensions.k8s.io/v1"
    assert manifest["kind"] == "CustomResourceDefinition"
    assert manifest["metadata"]["name"] == f"{plural}.elasticlm.io"
    spec = manifest["spec"]
    assert spec["group"] == "elasticlm.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind_,
        "listKind": f"{kind_}List",
        "plural": plural,
        "singular": singular,
        "shortNames": [short],
        "categories": ["elasticlm"],
    }
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}


def test_status_and_scale_subresources(kind: str) -> None:
    [version] = crd(kind)["spec"]["versions"]
    if kind == "LMTuningJob":
        # Its trials scale; the search itself has no replicas.
        assert version["subresources"] == {"status": {}}
        return
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    schema = version["schema"]["openAPIV3Schema"]
    for path, type_ in [
        ("spec.replicas", "integer"),
        ("status.replicas", "integer"),
        ("status.selector", "string"),
    ]:
        node = schema_at(schema, path)
        assert node is not None, path
        assert node["type"] == type_, path


@pytest.mark.parametrize(
    ("kind_", "expected"),
    [
        ("LMTrainingJob", ["Phase", "Replicas", "Ready", "World", "Step", "Age"]),
        ("LMService", ["Phase", "Replicas", "Ready", "Endpoint", "Age"]),
        ("LMTuningJob", ["Phase", "Algorithm", "Succeeded", "Max", "Best", "Objective", "Age"]),
    ],
)
def test_printer_columns(kind_: str, expected: list[str]) -> None:
    [version] = crd(kind_)["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert len(set(names)) == len(names)
    assert [n for n in names if n in expected] == expected
    assert names[-1] == "Age"
    by_name = {c["name"]: c for c in columns}
    assert by_name["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert by_name["Age"]["type"] == "date"
    assert by_name["Phase"]["jsonPath"] == ".status.phase"
    if kind_ == "LMTuningJob":
        assert by_name["Best"]["jsonPath"] == ".status.bestTrial.name"
        assert by_name["Objective"]["jsonPath"] == ".status.bestTrial.objective"
    else:
        assert by_name["Replicas"]["jsonPath"] == ".spec.replicas"
        assert by_name["Ready"]["jsonPath"] == ".status.readyReplicas"
    if kind_ == "LMTrainingJob":
        assert by_name["World"]["jsonPath"] == ".status.worldSize"
        assert by_name["Step"]["jsonPath"] == ".status.step"
    elif kind_ == "LMService":
        assert by_name["Endpoint"]["jsonPath"] == ".status.endpoint"

    schema = version["schema"]["openAPIV3Schema"]
    for column in columns:
        assert column["type"] in ("integer", "number", "string", "boolean", "date"), column
        assert column.get("description"), column
        path = column["jsonPath"]
        assert re.fullmatch(r"(\.[A-Za-z][A-Za-z0-9]*)+", path), path
        if path == ".metadata.creationTimestamp":
            continue  # part of ObjectMeta, which the CRD schema does not spell out
        node = schema_at(schema, path.lstrip("."))
        assert node is not None, f"{column['name']}: {path} is not in the schema"
        if column["type"] == "date":
            assert (node["type"], node.get("format")) == ("string", "date-time"), column
        else:
            assert node["type"] == column["type"], column


# ---------------------------------------------------------------------------
# CEL rules: they compile, read fields that exist, and each is in a CRD.
# ---------------------------------------------------------------------------

ALL_CRD_RULES = [
    (kind, path, rule) for kind in KINDS for path, _, rule in cel_rules_at(openapi_schema(kind))
]


def _rule_id(entry: tuple[str, str, dict[str, Any]]) -> str:
    kind, path, rule = entry
    return f"{kind}:{path or '<root>'}:{_rule_names().get(rule['rule'], '?')}"


def _all_python_rules() -> list[CelRule]:
    rules: list[CelRule] = list(RESOURCE_NAME_RULES)
    pending: list[type] = [ApiModel]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        for rule in getattr(cls, "cel_rules", []):
            if rule not in rules:
                rules.append(rule)
    return rules


def _rule_names() -> dict[str, str]:
    return {r.rule: r.name for r in _all_python_rules()}


def test_the_crds_have_cel_rules() -> None:
    assert len(ALL_CRD_RULES) >= 30
    assert {kind for kind, _, _ in ALL_CRD_RULES} == set(KINDS)


@pytest.mark.parametrize("entry", ALL_CRD_RULES, ids=_rule_id)
def test_rule_and_message_expression_compile(entry: tuple[str, str, dict[str, Any]]) -> None:
    _, _, rule = entry
    assert set(rule) <= {"rule", "message", "messageExpression", "fieldPath", "reason"}
    compile_cel(rule["rule"])
    compile_cel(rule["messageExpression"])
    assert rule["message"].strip()
    assert "\n" not in rule["message"]
    if "fieldPath" in rule:
        assert rule["reason"] == "FieldValueInvalid"
    else:
        assert "reason" not in rule


@pytest.mark.parametrize("entry", ALL_CRD_RULES, ids=_rule_id)
def test_rule_reads_only_fields_of_its_schema(entry: tuple[str, str, dict[str, Any]]) -> None:
    kind, path, rule = entry
    node = schema_at(openapi_schema(kind), path)
    assert node is not None
    for expression in (rule["rule"], rule["messageExpression"]):
        for chain in re.findall(r"\bself((?:\.\w+)+)", expression):
            parts = chain.lstrip(".").split(".")
            if re.search(rf"self{re.escape(chain)}\(", expression):
                parts = parts[:-1]  # a method: size(), matches(), all(), filter()
            target: dict[str, Any] | None = node
            for part in parts:
                if target is None or target.get("type") != "object":
                    break
                if part in ("name", "generateName") and "properties" not in target:
                    target = {"type": "string"}  # metadata, handled by the API server
                    continue
                target = (target.get("properties") or {}).get(part)
                assert target is not None, f"{expression}: {chain} is not a field of {path}"
    if "fieldPath" in rule:
        assert schema_at(node, rule["fieldPath"].lstrip(".")) is not None, rule["fieldPath"]


def test_every_python_rule_is_in_a_crd() -> None:
    in_crds = {rule["rule"]: rule for _, _, rule in ALL_CRD_RULES}
    python_rules = _all_python_rules()
    assert len(python_rules) >= 20
    for rule in python_rules:
        assert rule.rule in in_crds, f"{rule.name} is not in any CRD"
        assert in_crds[rule.rule] == rule.to_openapi()
    assert set(in_crds) == {r.rule for r in python_rules}


# ---------------------------------------------------------------------------
# No rule is vacuous: one concrete object violates it, and both sides say so alike.
# ---------------------------------------------------------------------------

_SIZE = "spec.model"
VIOLATIONS: dict[tuple[str, str, str], dict[str, Any]] = {
    # LMTrainingJob (the example: replicas 2 in [1, 3], batch 24 of 4, warmup 20 of 300)
    ("LMTrainingJob", "", "metadata-name-length"): {"metadata.name": "a" * 49},
    ("LMTrainingJob", "", "metadata-name-dns1035"): {"metadata.name": "tiny_lm"},
    ("LMTrainingJob", "spec", "replicas-at-least-min"): {"spec.elastic.minReplicas": 3},
    ("LMTrainingJob", "spec", "replicas-at-most-max"): {
        "spec.replicas": 3,
        "spec.elastic.maxReplicas": 2,
    },
    ("LMTrainingJob", "spec", "global-batch-multiple-of-micro"): {
        "spec.training.globalBatchSize": 26
    },
    ("LMTrainingJob", "spec", "global-batch-covers-workers"): {"spec.training.globalBatchSize": 8},
    ("LMTrainingJob", "spec", "global-batch-covers-processes"): {
        "spec.worker.processesPerPod": 2,
        "spec.training.globalBatchSize": 16,
    },
    ("LMTrainingJob", "spec", "warmup-shorter-than-training"): {"spec.training.warmupSteps": 300},
    ("LMTrainingJob", "spec", "model-exactly-one-source"): {
        _SIZE: {"preset": "tiny", "hf": {"path": "models/llama"}}
    },
    ("LMTrainingJob", "spec", "heads-divide-hidden-size"): {
        _SIZE: {"size": {"layers": 2, "hiddenSize": 100, "heads": 3}}
    },
    ("LMTrainingJob", "spec", "head-dim-even"): {
        _SIZE: {"size": {"layers": 2, "hiddenSize": 96, "heads": 32}}
    },
    ("LMTrainingJob", "spec", "kv-heads-divide-heads"): {
        _SIZE: {"size": {"layers": 2, "hiddenSize": 128, "heads": 4, "kvHeads": 3}}
    },
    ("LMTrainingJob", "spec", "sequence-within-context"): {"spec.training.sequenceLength": 256},
    ("LMTrainingJob", "spec", "vocab-size-only-for-bpe"): {
        "spec.data.tokenizer": {"type": "Bytes", "vocabSize": 300}
    },
    ("LMTrainingJob", "spec", "autoscaling-needs-range"): {
        "spec.autoscaling.policy": "Throughput",
        "spec.elastic": {"minReplicas": 2, "maxReplicas": 2},
    },
    ("LMTrainingJob", "spec.model.hf", "path-no-dotdot"): {_SIZE: {"hf": {"path": "../llama"}}},
    ("LMTrainingJob", "spec.data", "path-no-dotdot"): {"spec.data.path": "texts/../../etc"},
    ("LMTrainingJob", "spec.data.tokenizer", "tokenizer-path-no-dotdot"): {
        "spec.data.tokenizer.path": "../tokenizer.json"
    },
    ("LMTrainingJob", "spec.checkpoint", "path-no-dotdot"): {"spec.checkpoint.path": ".."},
    ("LMTrainingJob", "spec.worker.env[*]", "env-value-or-value-from"): {
        "spec.worker.env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]
    },
    ("LMTrainingJob", "spec.worker.env[*].valueFrom", "env-value-from-one-source"): {
        "spec.worker.env": [{"name": "A", "valueFrom": {}}]
    },
    # LMService (the example: replicas 1 in [1, 3], batch 8, queue 64)
    ("LMService", "", "metadata-name-length"): {"metadata.name": "s" * 60},
    ("LMService", "", "metadata-name-dns1035"): {"metadata.name": "9lm"},
    ("LMService", "spec", "model-exactly-one-source"): {"spec.model": {}},
    ("LMService", "spec", "autoscaling-min-at-most-max"): {
        "spec.replicas": 3,
        "spec.autoscaling.minReplicas": 3,
        "spec.autoscaling.maxReplicas": 2,
    },
    ("LMService", "spec", "replicas-at-least-min"): {"spec.autoscaling.minReplicas": 2},
    ("LMService", "spec", "replicas-at-most-max"): {"spec.replicas": 4},
    ("LMService", "spec", "queue-holds-a-batch"): {"spec.serving.maxQueue": 4},
    ("LMService", "spec", "int8-computes-in-fp32"): {"spec.precision": "fp16"},
    ("LMService", "spec", "prometheus-needs-url"): {"spec.autoscaling.source": "Prometheus"},
    ("LMService", "spec", "schedules-within-max"): {
        "spec.autoscaling.schedules": [
            {"name": "night", "cron": "0 0 * * *", "durationSeconds": 3600, "minReplicas": 1},
            {"name": "peak", "cron": "0 8 * * 1-5", "durationSeconds": 3600, "minReplicas": 5},
            {"name": "peak2", "cron": "0 9 * * 1-5", "durationSeconds": 60, "minReplicas": 7},
        ]
    },
    ("LMService", "spec.model.checkpoint", "path-no-dotdot"): {
        "spec.model": {"checkpoint": {"path": "runs/../x"}}
    },
    ("LMService", "spec.model.hf", "path-no-dotdot"): {"spec.model": {"hf": {"path": "a/.."}}},
    ("LMService", "spec.worker.env[*]", "env-value-or-value-from"): {
        "spec.worker.env": [
            {
                "name": "TOKEN",
                "value": "x",
                "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
            }
        ]
    },
    ("LMService", "spec.worker.env[*].valueFrom", "env-value-from-one-source"): {
        "spec.worker.env": [
            {
                "name": "X",
                "valueFrom": {
                    "secretKeyRef": {"name": "s", "key": "k"},
                    "configMapKeyRef": {"name": "c", "key": "k"},
                },
            }
        ]
    },
    # LMTuningJob (the example: learningRate Float log in [1e-4, 0.03], warmupSteps Int in
    # [0, 20] by 5; 2 parallel trials of 1..2 workers sharing 4; Bayesian; Median stopping)
    ("LMTuningJob", "", "metadata-name-length"): {"metadata.name": "t" * 44},
    ("LMTuningJob", "", "metadata-name-dns1035"): {"metadata.name": "Search"},
    ("LMTuningJob", "spec", "parallel-trials-within-max-replicas"): {"spec.budget.maxReplicas": 1},
    ("LMTuningJob", "spec", "parallel-trials-within-max-trials"): {"spec.budget.parallelTrials": 9},
    ("LMTuningJob", "spec", "parameter-paths-unique"): {
        "spec.parameters[1].path": "training.learningRate",
        "spec.parameters[1].type": "Float",
    },
    ("LMTuningJob", "spec", "grid-needs-steps"): {"spec.algorithm.name": "Grid"},
    ("LMTuningJob", "spec", "validation-needs-holdout"): {
        "spec.trialTemplate.data.validationFraction": 0,
    },
    ("LMTuningJob", "spec", "early-stopping-needs-checkpoints"): {
        "spec.trialTemplate.checkpoint": DELETE,
    },
    ("LMTuningJob", "spec.parameters[*]", "parameter-path-tunable"): {
        "spec.parameters[0].path": "training.learnigRate"
    },
    ("LMTuningJob", "spec.parameters[*]", "parameter-float-sets-number"): {
        "spec.parameters[1].type": "Float"
    },
    ("LMTuningJob", "spec.parameters[*]", "parameter-int-sets-number"): {
        "spec.parameters[1]": {
            "name": "precision",
            "path": "training.precision",
            "type": "Int",
            "min": 0,
            "max": 1,
        }
    },
    ("LMTuningJob", "spec.parameters[*]", "parameter-categorical-values"): {
        "spec.parameters[1].type": "Categorical"
    },
    ("LMTuningJob", "spec.parameters[*]", "parameter-range-bounds"): {
        "spec.parameters[1].max": DELETE
    },
    ("LMTuningJob", "spec.parameters[*]", "parameter-min-below-max"): {
        "spec.parameters[0].max": 0.0001
    },
    ("LMTuningJob", "spec.parameters[*]", "parameter-log-positive"): {"spec.parameters[0].min": 0},
    ("LMTuningJob", "spec.parameters[*]", "parameter-log-or-step"): {
        "spec.parameters[0].step": 0.001
    },
    ("LMTuningJob", "spec.parameters[*]", "parameter-int-whole"): {"spec.parameters[1].step": 2.5},
    ("LMTuningJob", "spec.parameters[*]", "parameter-values-fit"): {
        "spec.parameters[1]": {
            "name": "precision",
            "path": "training.precision",
            "type": "Categorical",
            "values": ["fp32", "fp8"],
        }
    },
    ("LMTuningJob", "spec.trialTemplate", "replicas-at-least-min"): {
        "spec.trialTemplate.elastic.minReplicas": 2
    },
    ("LMTuningJob", "spec.trialTemplate", "replicas-at-most-max"): {
        "spec.trialTemplate.replicas": 3
    },
    ("LMTuningJob", "spec.trialTemplate", "global-batch-multiple-of-micro"): {
        "spec.trialTemplate.training.globalBatchSize": 10
    },
    ("LMTuningJob", "spec.trialTemplate", "global-batch-covers-workers"): {
        "spec.trialTemplate.training.globalBatchSize": 4
    },
    ("LMTuningJob", "spec.trialTemplate", "global-batch-covers-processes"): {
        "spec.trialTemplate.worker.processesPerPod": 2,  # 2 workers x 2 > 8 / 4
    },
    ("LMTuningJob", "spec.trialTemplate", "sequence-within-context"): {
        "spec.trialTemplate.training.sequenceLength": 256
    },
    ("LMTuningJob", "spec.trialTemplate", "warmup-shorter-than-training"): {
        "spec.trialTemplate.training.warmupSteps": 60
    },
    ("LMTuningJob", "spec.trialTemplate", "model-exactly-one-source"): {
        "spec.trialTemplate.model": {"preset": "tiny", "hf": {"path": "models/llama"}}
    },
    ("LMTuningJob", "spec.trialTemplate", "heads-divide-hidden-size"): {
        "spec.trialTemplate.model": {"size": {"layers": 2, "hiddenSize": 100, "heads": 3}}
    },
    ("LMTuningJob", "spec.trialTemplate", "head-dim-even"): {
        "spec.trialTemplate.model": {"size": {"layers": 2, "hiddenSize": 96, "heads": 32}}
    },
    ("LMTuningJob", "spec.trialTemplate", "kv-heads-divide-heads"): {
        "spec.trialTemplate.model": {
            "size": {"layers": 2, "hiddenSize": 128, "heads": 4, "kvHeads": 3}
        }
    },
    ("LMTuningJob", "spec.trialTemplate", "vocab-size-only-for-bpe"): {
        "spec.trialTemplate.data.tokenizer": {"type": "Bytes", "vocabSize": 300}
    },
    ("LMTuningJob", "spec.trialTemplate", "autoscaling-needs-range"): {
        "spec.trialTemplate.autoscaling.policy": "Throughput",
        "spec.trialTemplate.elastic": {"minReplicas": 1, "maxReplicas": 1},
    },
    ("LMTuningJob", "spec.trialTemplate.model.hf", "path-no-dotdot"): {
        "spec.trialTemplate.model": {"hf": {"path": "../llama"}}
    },
    ("LMTuningJob", "spec.trialTemplate.data", "path-no-dotdot"): {
        "spec.trialTemplate.data.path": "../x"
    },
    ("LMTuningJob", "spec.trialTemplate.data.tokenizer", "tokenizer-path-no-dotdot"): {
        "spec.trialTemplate.data.tokenizer.path": "../tokenizer.json"
    },
    ("LMTuningJob", "spec.trialTemplate.checkpoint", "path-no-dotdot"): {
        "spec.trialTemplate.checkpoint.path": ".."
    },
    ("LMTuningJob", "spec.trialTemplate.worker.env[*]", "env-value-or-value-from"): {
        "spec.trialTemplate.worker.env": [
            {"name": "B", "value": "", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]
    },
    ("LMTuningJob", "spec.trialTemplate.worker.env[*].valueFrom", "env-value-from-one-source"): {
        "spec.trialTemplate.worker.env": [{"name": "A", "valueFrom": {}}]
    },
}


def _crd_rule_keys() -> list[tuple[str, str, str]]:
    names = _rule_names()
    return [(kind, path, names[rule["rule"]]) for kind, path, rule in ALL_CRD_RULES]


def test_every_crd_rule_has_a_violating_example() -> None:
    assert sorted(_crd_rule_keys()) == sorted(VIOLATIONS)


def _values_at(obj: Any, path: str) -> list[Any]:
    """The values a schema path (with [*]) reaches in an object."""
    values = [obj]
    for part in re.findall(r"[^.\[\]]+|\[\*\]", path):
        found = []
        for value in values:
            if part == "[*]" and isinstance(value, list):
                found.extend(value)
            elif isinstance(value, dict) and part in value:
                found.append(value[part])
        values = found
    return values


@pytest.mark.parametrize(("kind_", "path", "name"), sorted(VIOLATIONS), ids=lambda v: v or "<root>")
def test_rule_is_not_vacuous(kind_: str, path: str, name: str) -> None:
    manifest = patched(example_manifest(kind_), VIOLATIONS[(kind_, path, name)])
    schema = openapi_schema(kind_)
    defaulted = apply_defaults(schema, manifest)
    assert schema_errors(schema, defaulted) == [], "the example must break only CEL rules"

    [rule] = [
        r for p, _, r in cel_rules_at(schema) if p == path and _rule_names()[r["rule"]] == name
    ]
    node_schema = schema_at(schema, path)
    broken = [v for v in _values_at(defaulted, path) if not rule_holds(rule, v, node_schema)]
    assert broken, f"{name} holds on every {path or 'root'} of the example"
    messages = {rule_message(rule, v, node_schema) for v in broken}

    api_server = set(cel_problems(schema, manifest))
    model = set(model_problems(manifest))
    assert model, "the model accepts what the API server rejects"
    assert api_server == model
    mine = [m for m in api_server if any(m.endswith(message) for message in messages)]
    assert mine, f"{name}'s own message is missing: {api_server}"


@pytest.mark.parametrize(
    ("kind_", "changes", "problem"),
    [
        (
            "LMTrainingJob",
            {"spec.elastic.minReplicas": 3},
            "spec.replicas (2) must be >= spec.elastic.minReplicas (3)",
        ),
        (
            "LMTrainingJob",
            {"spec.training.globalBatchSize": 8},
            "spec.training.globalBatchSize (8) must hold at least one micro-batch of 4 for "
            "each of up to 3 workers: use 12 or more",
        ),
        (
            "LMTrainingJob",
            {_SIZE: {"size": {"layers": 2, "hiddenSize": 96, "heads": 32}}},
            "spec.model.size.hiddenSize / spec.model.size.heads (3) must be even for rotary "
            "position embeddings",
        ),
        (
            "LMTrainingJob",
            {"spec.autoscaling.policy": "Goodput", "spec.elastic.maxReplicas": DELETE},
            "spec.autoscaling.policy Goodput needs room to scale: set spec.elastic.maxReplicas "
            "above spec.elastic.minReplicas (1)",
        ),
        (
            "LMTrainingJob",
            {"spec.checkpoint.path": "a/../b"},
            "spec.checkpoint.path: must not contain '..' segments (got 'a/../b')",
        ),
        (
            "LMService",
            {
                "spec.autoscaling.schedules": [
                    {"name": "peak", "cron": "0 8 * * *", "durationSeconds": 60, "minReplicas": 9}
                ]
            },
            "spec.autoscaling.schedules peak: minReplicas (9) must be <= "
            "spec.autoscaling.maxReplicas (3)",
        ),
        (
            "LMService",
            {"metadata.name": "x" * 49},
            f"metadata.name ({'x' * 49}) must be at most 48 characters so that the names of "
            "its pods and services stay valid",
        ),
        (
            "LMService",
            {
                "spec.worker.env": [
                    {
                        "name": "T",
                        "value": "v",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                    }
                ]
            },
            "spec.worker.env[0]: set value or valueFrom, not both",
        ),
        (
            "LMTuningJob",
            {"spec.parameters[0].path": "training.learnigRate"},
            "spec.parameters[0].path: 'training.learnigRate' is not a tunable field of an "
            "LMTrainingJob spec: parameters set number, integer, boolean and enum fields under "
            "model, training and data.tokenizer (docs/tuning.md)",
        ),
        (
            "LMTuningJob",
            {"spec.parameters[1].type": "Float"},
            "spec.parameters[1].type: type Float sets a number field, and "
            "'training.warmupSteps' is an integer: use Int or Categorical",
        ),
        (
            "LMTuningJob",
            {
                "spec.budget.parallelTrials": 3,
                "spec.trialTemplate.elastic.minReplicas": 2,
                "spec.trialTemplate.replicas": 2,
            },
            "spec.budget.parallelTrials (3) x (spec.trialTemplate.elastic.minReplicas (2) + "
            "spec.trialTemplate.elastic.warmSpares (0)) must be <= spec.budget.maxReplicas (4)",
        ),
        (
            "LMTuningJob",
            {"spec.trialTemplate.elastic.warmSpares": 2},
            "spec.budget.parallelTrials (2) x (spec.trialTemplate.elastic.minReplicas (1) + "
            "spec.trialTemplate.elastic.warmSpares (2)) must be <= spec.budget.maxReplicas (4)",
        ),
        (
            "LMTuningJob",
            {
                "spec.parameters[1]": {
                    "name": "w",
                    "path": "training.sync",
                    "type": "Categorical",
                    "values": ["DDP", "Local"],
                }
            },
            "spec.parameters[1].values: values must each be one of DDP, LocalSGD for "
            "'training.sync'",
        ),
    ],
)
def test_exact_messages(kind_: str, changes: dict[str, Any], problem: str) -> None:
    manifest = patched(example_manifest(kind_), changes)
    schema = openapi_schema(kind_)
    assert cel_problems(schema, manifest) == [problem]
    assert model_problems(manifest) == [problem]


# ---------------------------------------------------------------------------
# The CEL mirror: on near-valid manifests, the model accepts exactly when every CEL
# rule holds, and reports exactly the messages the API server would.
# ---------------------------------------------------------------------------


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(DELETE), strategy)


names = st.one_of(
    st.from_regex(r"[a-z]([-a-z0-9]{0,12}[a-z0-9])?", fullmatch=True),
    st.integers(44, 60).map(lambda n: ("tiny-lm-" * 8)[:n].rstrip("-") + "x"),
    st.sampled_from(
        [
            "tiny-lm",
            "Tiny-lm",
            "tiny_lm",
            "1tiny",
            "tiny-",
            "-tiny",
            "tiny.lm",
            "tiny-lm\n",
            "a" * 48,
            "a" * 49,
            "A" * 49,
        ]
    ),
    st.text(alphabet="abcZ09-_.", min_size=1, max_size=55),
)

SEGMENTS = ["a", "data", ".", "..", "...", "..a", "a..", ".. ", "..\n", "it's", "a\\b"]
paths = st.one_of(
    st.sampled_from(
        ["corpus.txt", "/data/corpus", "..", "../x", "a/..", "a/../b", "a/..b", "..a", "a/..\n"]
    ),
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map("/".join),
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(lambda s: "/" + "/".join(s)),
)

SOURCES = {
    "secretKeyRef": {"name": "hf-token", "key": "token"},
    "configMapKeyRef": {"name": "settings", "key": "level"},
    "fieldRef": {"fieldPath": "status.podIP"},
}


@st.composite
def env_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    env_names = draw(st.lists(st.sampled_from(["A", "B_1", "log.level", "_X"]), unique=True))
    result = []
    for name in env_names:
        var: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            var["value"] = draw(st.sampled_from(["", "1", "some value"]))
        if draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(sorted(SOURCES)), unique=True, max_size=3))
            var["valueFrom"] = {k: SOURCES[k] for k in chosen}
        result.append(var)
    return result


@st.composite
def near_valid_training_jobs(draw: st.DrawFn) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "metadata": draw(
            st.one_of(
                names.map(lambda n: {"name": n}),
                st.just({"generateName": "tiny-lm-"}),
            )
        ),
        "spec.replicas": draw(_optional(st.integers(1, 6))),
        "spec.elastic.minReplicas": draw(_optional(st.integers(1, 6))),
        "spec.elastic.maxReplicas": draw(_optional(st.integers(1, 6))),
        "spec.training.globalBatchSize": draw(_optional(st.integers(1, 48))),
        "spec.training.microBatchSize": draw(_optional(st.integers(1, 12))),
        "spec.training.warmupSteps": draw(_optional(st.integers(0, 12))),
        "spec.training.steps": draw(_optional(st.integers(1, 12))),
        "spec.data.path": draw(paths),
        "spec.data.tokenizer": draw(
            _optional(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "type": st.sampled_from(["Bytes", "BPE"]),
                        "vocabSize": st.integers(260, 9000),
                        "path": paths,
                    },
                )
            )
        ),
        "spec.checkpoint": draw(_optional(paths.map(lambda p: {"path": p, "keep": 2}))),
        "spec.autoscaling": draw(
            _optional(
                st.fixed_dictionaries(
                    {}, optional={"policy": st.sampled_from(["None", "Throughput", "Goodput"])}
                )
            )
        ),
        "spec.worker.env": draw(_optional(env_lists())),
    }
    sources = draw(st.sets(st.sampled_from(["preset", "size", "hf"])))
    model: dict[str, Any] = {}
    if "preset" in sources:
        model["preset"] = draw(st.sampled_from(["tiny", "small", "base"]))
    if "size" in sources:
        model["size"] = draw(
            st.fixed_dictionaries(
                {
                    "layers": st.integers(1, 4),
                    "hiddenSize": st.integers(8, 96),
                    "heads": st.integers(1, 12),
                },
                optional={"kvHeads": st.integers(1, 6), "contextLength": st.just(64)},
            )
        )
    if "hf" in sources:
        model["hf"] = {"path": draw(paths)}
    keep: bool = bool(model) or draw(st.booleans())  # an empty model, or none at all
    changes["spec.model"] = model if keep else DELETE
    return patched(example_manifest("LMTrainingJob"), changes)


@st.composite
def near_valid_services(draw: st.DrawFn) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "metadata": draw(names.map(lambda n: {"name": n, "namespace": "ml"})),
        "spec.replicas": draw(_optional(st.integers(0, 6))),
        "spec.serving.maxQueue": draw(_optional(st.integers(1, 12))),
        "spec.serving.maxBatchSize": draw(_optional(st.integers(1, 12))),
        "spec.worker.env": draw(_optional(env_lists())),
    }
    model: dict[str, Any] = {}
    for source in draw(st.sets(st.sampled_from(["fromTrainingJob", "checkpoint", "hf"]))):
        model[source] = (
            {"name": "tiny-lm"} if source == "fromTrainingJob" else {"path": draw(paths)}
        )
    changes["spec.model"] = model
    if draw(st.booleans()):
        changes["spec.autoscaling"] = DELETE
    else:
        schedule_names = draw(st.lists(st.sampled_from(["peak", "night", "w-e"]), unique=True))
        schedules = [
            {
                "name": name,
                "cron": "0 8 * * 1-5",
                "durationSeconds": 3600,
                "minReplicas": draw(st.integers(1, 8)),
            }
            for name in schedule_names
        ]
        changes["spec.autoscaling"] = draw(
            st.fixed_dictionaries(
                {"maxReplicas": st.integers(1, 6)},
                optional={
                    "minReplicas": st.integers(1, 6),
                    "source": st.sampled_from(["Pods", "Prometheus"]),
                    "prometheus": st.just({"url": "http://prometheus.monitoring:9090"}),
                    "schedules": st.just(schedules),
                },
            )
        )
    return patched(example_manifest("LMService"), changes)


_TUNING_VALUES = st.sampled_from([["32", "64"], ["fp32", "bf16"], ["0.001", "x"], ["1"]])
_TUNING_NUMBERS = st.sampled_from([0, 0.0001, 0.5, 1, 2.5, 20, 64])


@st.composite
def tuning_parameters(draw: st.DrawFn) -> dict[str, Any]:
    """A parameter near the rules' edges: paths right, mistyped or of the wrong kind of
    field; ranges with and without bounds, log, step; values that fit or do not."""
    param: dict[str, Any] = {
        "name": draw(st.sampled_from(["lr", "warmup", "width", "precision"])),
        "path": draw(
            st.sampled_from(
                [
                    "training.learningRate",
                    "training.warmupSteps",
                    "model.size.hiddenSize",
                    "training.precision",
                    "training.learnigRate",
                ]
            )
        ),
        "type": draw(st.sampled_from(["Float", "Int", "Categorical"])),
    }
    for key, strategy in (
        ("min", _TUNING_NUMBERS),
        ("max", _TUNING_NUMBERS),
        ("log", st.booleans()),
        ("step", st.sampled_from([1, 0.5, 5])),
        ("values", _TUNING_VALUES),
    ):
        if draw(st.booleans()):
            param[key] = draw(strategy)
    return param


@st.composite
def near_valid_tuning_jobs(draw: st.DrawFn) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "metadata": draw(names.map(lambda n: {"name": n})),
        "spec.budget.maxReplicas": draw(_optional(st.integers(1, 6))),
        "spec.budget.parallelTrials": draw(_optional(st.integers(1, 4))),
        "spec.budget.maxTrials": draw(_optional(st.integers(1, 10))),
        "spec.trialTemplate.elastic.minReplicas": draw(_optional(st.integers(1, 2))),
        "spec.trialTemplate.data.validationFraction": draw(_optional(st.sampled_from([0, 0.05]))),
        "spec.trialTemplate.checkpoint": draw(
            st.sampled_from([DELETE, {"path": "search", "intervalSteps": 20}])
        ),
        "spec.algorithm.name": draw(
            st.sampled_from(["Grid", "Random", "Greedy", "SimulatedAnnealing", "Bayesian"])
        ),
        "spec.objective.metric": draw(
            st.sampled_from(["validationLoss", "trainLoss", "tokensPerSecond"])
        ),
        "spec.earlyStopping.policy": draw(st.sampled_from(["None", "Median", "SuccessiveHalving"])),
    }
    if draw(st.booleans()):
        changes["spec.parameters"] = draw(
            st.lists(tuning_parameters(), min_size=1, max_size=3, unique_by=lambda p: p["name"])
        )
    return patched(example_manifest("LMTuningJob"), changes)


near_valid = st.one_of(near_valid_training_jobs(), near_valid_services(), near_valid_tuning_jobs())

MIRROR = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _both_sides(manifest: dict[str, Any]) -> tuple[set[str], set[str]]:
    schema = openapi_schema(manifest["kind"])
    defaulted = apply_defaults(schema, manifest)
    # Only the cross-field rules may decide: every field is within its own bounds.
    assert schema_errors(schema, defaulted) == []
    api_server = {
        describe_cel_failure(p, m) for p, m in cel_failures(schema, defaulted, defaulted=True)
    }
    return api_server, set(model_problems(manifest))


# Corner cases found while writing these tests, kept so that every run tries them.
_JOB = "LMTrainingJob"
_SVC = "LMService"
# RE2 (the API server) does not let `$` match before a trailing newline; Python's re does.
NAME_WITH_NEWLINE = (_SVC, {"metadata.name": "tiny-lm\n"})
PATH_WITH_NEWLINE = (_JOB, {"spec.data.path": "a/..\n"})
# has(self.metadata.name) is true for "", and "" is no DNS-1035 label.
EMPTY_NAME = (_JOB, {"metadata.name": ""})
# The API server's message quotes the path as it is; Python's repr() escapes it.
PATH_WITH_QUOTE = (_JOB, {"spec.checkpoint.path": "../it's"})
# A rule failing on a nested object and one on its parent, at once: the API server
# reports both.
NESTED_AND_SPEC = (_JOB, {"spec.data.path": "../corpus.txt", "spec.replicas": 9})
NESTED_AND_ITEM = (_SVC, {"spec.worker.env": [{"name": "A", "value": "1", "valueFrom": {}}]})


def _corner(case: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    kind, changes = case
    return patched(example_manifest(kind), changes)


@MIRROR
@given(near_valid)
@example(_corner(NAME_WITH_NEWLINE))
@example(_corner(PATH_WITH_NEWLINE))
@example(_corner(EMPTY_NAME))
def test_model_accepts_exactly_when_every_cel_rule_holds(manifest: dict[str, Any]) -> None:
    api_server, model = _both_sides(manifest)
    assert bool(api_server) == bool(model), (api_server, model)


@MIRROR
@given(near_valid)
@example(_corner(NESTED_AND_SPEC))
@example(_corner(NESTED_AND_ITEM))
@example(_corner(NAME_WITH_NEWLINE))
@example(_corner(PATH_WITH_NEWLINE))
@example(_corner(PATH_WITH_QUOTE))
def test_each_cel_rule_intent_is_mirrored_by_the_model(manifest: dict[str, Any]) -> None:
    api_server, model = _both_sides(manifest)
    assert api_server == model


DUPLICATE_KEYS = [
    (
        _JOB,
        "spec.worker.env",
        [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
    ),
    (
        _SVC,
        "spec.worker.env",
        [{"name": "A", "value": "1"}, {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
    ),
    (
        _SVC,
        "spec.autoscaling.metrics",
        [{"type": "InFlightRequests", "target": 4}, {"type": "InFlightRequests", "target": 8}],
    ),
    (
        _SVC,
        "spec.autoscaling.schedules",
        [
            {"name": "peak", "cron": "0 8 * * *", "durationSeconds": 60, "minReplicas": 1},
            {"name": "peak", "cron": "0 9 * * *", "durationSeconds": 60, "minReplicas": 2},
        ],
    ),
    (
        "LMTuningJob",
        "spec.trialTemplate.worker.env",
        [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
    ),
    (
        "LMTuningJob",
        "spec.parameters",
        [
            {"name": "lr", "path": "training.learningRate", "type": "Float", "min": 0.1, "max": 1},
            {"name": "lr", "path": "training.weightDecay", "type": "Float", "min": 0.1, "max": 1},
        ],
    ),
]


def test_duplicate_key_cases_cover_every_list_map_of_the_specs() -> None:
    list_maps = {
        (kind, path)
        for kind in KINDS
        for path, node in iter_schema_nodes(openapi_schema(kind))
        if path.startswith("spec.") and node.get("x-kubernetes-list-type") == "map"
    }
    assert list_maps == {(kind, path) for kind, path, _ in DUPLICATE_KEYS}


@pytest.mark.parametrize(
    ("kind_", "path", "value"), DUPLICATE_KEYS, ids=[f"{k}:{p}" for k, p, _ in DUPLICATE_KEYS]
)
def test_duplicate_list_map_keys_are_rejected_like_the_api_server_does(
    kind_: str, path: str, value: list[dict[str, Any]]
) -> None:
    manifest = patched(example_manifest(kind_), {path: value})
    schema = openapi_schema(kind_)
    errors = schema_errors(schema, apply_defaults(schema, manifest))
    assert errors, "the API server rejects a list-type map with a duplicate key"
    assert any("duplicate" in e for e in errors)
    assert model_problems(manifest), f"the model accepts duplicate keys in {path}"


# ---------------------------------------------------------------------------
# Valid manifests are valid for the API server too.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind_", KINDS)
def test_examples_pass_the_crd_schema_and_every_rule(kind_: str) -> None:
    manifest = example_manifest(kind_)
    schema = openapi_schema(kind_)
    defaulted = apply_defaults(schema, manifest)
    assert schema_errors(schema, defaulted) == []
    assert cel_failures(schema, defaulted, defaulted=True) == []
    # The API server's defaults are the model's defaults.
    assert parse_resource(manifest).to_wire() == parse_resource(defaulted).to_wire()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_valid_manifests_pass_the_crd_schema_and_every_rule(data: st.DataObject) -> None:
    manifest = data.draw(st.one_of(strategies.training_jobs(), strategies.services()))
    assert model_problems(manifest) == []
    schema = openapi_schema(manifest["kind"])
    defaulted = apply_defaults(schema, manifest)
    assert schema_errors(schema, defaulted) == []
    assert cel_failures(schema, defaulted, defaulted=True) == []
    # Defaulting by the API server changes nothing the model would not fill in itself.
    assert parse_resource(defaulted).to_wire() == parse_resource(manifest).to_wire()


# ---------------------------------------------------------------------------
# The helpers themselves behave as the API server does.
# ---------------------------------------------------------------------------

TOY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "default": 1},
        "b": {"type": "integer"},
        "o": {
            "type": "object",
            "default": {},
            "properties": {
                "x": {"type": "string", "default": "X"},
                "inner": {
                    "type": "object",
                    "default": {"y": 2},
                    "properties": {
                        "y": {"type": "integer"},
                        "z": {"type": "number", "default": 0.5},
                    },
                },
            },
        },
        "absent": {"type": "object", "properties": {"q": {"type": "integer", "default": 3}}},
        "list": {
            "type": "array",
            "items": {"type": "object", "properties": {"k": {"type": "string", "default": "d"}}},
        },
        "map": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"v": {"type": "integer", "default": 7}},
            },
        },
        "num": {"type": "number"},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "ios": {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        },
    },
}


def test_apply_defaults_recurses_like_the_api_server() -> None:
    original: dict[str, Any] = {
        "b": None,
        "list": [{}, {"k": "set"}],
        "map": {"m": {}},
        "o": {"x": "mine"},
    }
    result = apply_defaults(TOY, original)
    assert result == {
        "a": 1,
        "list": [{"k": "d"}, {"k": "set"}],
        "map": {"m": {"v": 7}},
        "o": {"x": "mine", "inner": {"y": 2, "z": 0.5}},
    }
    assert original["b"] is None, "the input is not modified"
    assert apply_defaults(TOY, {})["o"] == {"x": "X", "inner": {"y": 2, "z": 0.5}}
    first = apply_defaults(TOY, {})
    first["o"]["inner"]["y"] = 99
    assert apply_defaults(TOY, {})["o"]["inner"]["y"] == 2, "defaults are copied"


def test_evaluate_cel_types_numbers_by_the_schema() -> None:
    value = {"num": 4, "b": 4, "ios": 3, "free": {"n": 1.5}}
    assert isinstance(evaluate_cel("self.num", value, TOY), celtypes.DoubleType)
    assert isinstance(evaluate_cel("self.b", value, TOY), celtypes.IntType)
    assert isinstance(evaluate_cel("self.ios", value, TOY), celtypes.IntType)
    assert isinstance(evaluate_cel("self.free.n", value, TOY), celtypes.DoubleType)
    assert evaluate_cel("string(self.b / 3)", value, TOY) == "1"
    assert evaluate_cel("has(self.b) && !has(self.a)", value, TOY)
    assert evaluate_cel("self.name.matches('^[a-z]+$')", {"name": "abc"})
    # RE2, as in the API server: `$` does not match before a trailing newline.
    assert not evaluate_cel("self.name.matches('^[a-z]+$')", {"name": "abc\n"})
    with pytest.raises(CelEvaluationError):
        evaluate_cel("self.missing == 1", value, TOY)


def test_cel_failures_walk_items_and_report_paths() -> None:
    schema = copy.deepcopy(TOY)
    items = schema["properties"]["list"]["items"]
    items["x-kubernetes-validations"] = [
        {"rule": "self.k != 'bad'", "messageExpression": "'k is ' + self.k", "message": "m"},
        {"rule": "self.k != 'worse'", "message": "static", "fieldPath": ".k"},
        {"rule": "self.missing == 1", "message": "never"},
    ]
    failures = cel_failures(
        schema, {"list": [{"k": "ok", "missing": 1}, {"k": "bad", "missing": 1}]}
    )
    assert failures == [("list[1]", "k is bad")]
    failures = cel_failures(schema, {"list": [{"k": "worse"}]})
    assert failures[0] == ("list[0].k", "static")
    assert failures[1][0] == "list[0]"
    assert "could not be evaluated" in failures[1][1]
    assert describe_cel_failure("list[0].k", "static") == "list[0].k: static"
    assert describe_cel_failure("spec", "spec.x is wrong") == "spec.x is wrong"
    assert describe_cel_failure("", "metadata.name (x) ...") == "metadata.name (x) ..."


def test_openapi_validator_is_strict_like_kubernetes() -> None:
    validator = openapi_validator(TOY)
    assert list(validator.iter_errors({"ios": 3, "free": {"any": {"thing": 1}}})) == []
    assert list(validator.iter_errors({"ios": "3Gi", "map": {"m": {"v": 1}}})) == []
    assert list(validator.iter_errors({"unknown": 1}))
    assert list(validator.iter_errors({"o": {"inner": {"nope": 1}}}))
    assert list(validator.iter_errors({"ios": 1.5}))
    assert list(validator.iter_errors({"a": 1.5}))
    bounded = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert list(openapi_validator(bounded).iter_errors(0))
    assert not list(openapi_validator(bounded).iter_errors(0.1))
    listmap = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
    }
    assert not list(openapi_validator(listmap).iter_errors([{"name": "a"}, {"name": "b"}]))
    assert list(openapi_validator(listmap).iter_errors([{"name": "a"}, {"name": "a"}]))
