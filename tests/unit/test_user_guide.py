"""docs/user-guide.md: its examples are valid, would run, and cover every field.

Every YAML block of the guide that is an ElasticLM manifest must parse with the API
models (the same checks as `elasticlm validate`), and the pods the operator would build
from it must be allowed. Together the examples must set every field of the CRD schemas
(spec and status), so a field added to the API fails this test until the guide shows it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmoperator.api import (
    LMService,
    LMServiceStatus,
    LMTrainingJob,
    LMTrainingJobStatus,
    LMTuningJob,
    LMTuningJobStatus,
    kinds,
    parse_resource,
)
from lmoperator.api.crd import RESOURCE_KINDS, crd_manifest
from lmoperator.builders.service import validate_server_pod
from lmoperator.builders.trainingjob import validate_worker_pod

STATUS_TYPES: dict[
    type, type[LMTrainingJobStatus] | type[LMServiceStatus] | type[LMTuningJobStatus]
] = {
    LMTrainingJob: LMTrainingJobStatus,
    LMService: LMServiceStatus,
    LMTuningJob: LMTuningJobStatus,
}
# A field under an LMTuningJob's spec.trialTemplate is an LMTrainingJob spec field: the
# guide's LMTrainingJob examples show it (the template's own example shows its use).
TEMPLATES = {"LMTuningJob": ("spec.trialTemplate", "LMTrainingJob", "spec")}
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"


def manifests() -> list[dict[str, Any]]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", GUIDE.read_text(), re.MULTILINE | re.DOTALL)
    docs = [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]
    return [d for d in docs if isinstance(d, dict) and d.get("apiVersion") == kinds.API_VERSION]


def schema_paths(kind: str) -> set[str]:
    """Every field of a kind's spec and status, as `spec.a.b` (`[]` for list items);
    the keys of maps and of the free-form pod template are the user's own."""
    resource = next(r for r in RESOURCE_KINDS if r.identity.kind == kind)
    root = crd_manifest(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    paths: set[str] = set()

    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in node.get("properties", {}).items():
            paths.add(f"{path}.{name}")
            if child.get("type") == "array":
                walk(child["items"], f"{path}.{name}[]")
            elif "additionalProperties" not in child:
                walk(child, f"{path}.{name}")

    for part in ("spec", "status"):
        walk(root["properties"][part], part)
    return paths


def set_paths(value: Any, path: str, known: set[str]) -> set[str]:
    """The field paths an example sets (only those of the schema, so maps' keys and the
    pod template's contents are not mistaken for fields)."""
    found = set()
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}"
            if child_path in known:
                found.add(child_path)
                found |= set_paths(child, child_path, known)
    elif isinstance(value, list):
        for item in value:
            found |= set_paths(item, f"{path}[]", known)
    return found


def test_the_guide_has_examples_of_every_kind() -> None:
    kinds_shown = [m["kind"] for m in manifests()]
    assert kinds_shown.count("LMTrainingJob") >= 3
    assert kinds_shown.count("LMService") >= 3
    assert kinds_shown.count("LMTuningJob") >= 1


def shown_fields(kind: str, known: set[str]) -> set[str]:
    shown: set[str] = set()
    for manifest in manifests():
        if manifest["kind"] == kind:
            for part in ("spec", "status"):
                shown |= set_paths(manifest.get(part), part, known)
    return shown


@pytest.mark.parametrize(
    "manifest",
    manifests(),
    ids=lambda m: f"{m['kind']}/{m['metadata']['name']}",
)
def test_every_example_is_valid_and_would_run(manifest: dict[str, Any]) -> None:
    # Raises with every problem, as `elasticlm validate` says them.
    resource = parse_resource({k: v for k, v in manifest.items() if k != "status"})
    if "status" in manifest:
        # The status on its own: parse_resource's strict validation takes no RFC 3339
        # text for a time inside its cross-field (CEL) wrapper, so it is checked here
        # without strict mode (unknown fields are still rejected).
        status_type = STATUS_TYPES[type(resource)]
        status_type.model_validate_json(
            json.dumps(manifest["status"]), by_alias=True, by_name=False
        )
    if isinstance(resource, LMTrainingJob):
        assert validate_worker_pod(resource) == []
    if isinstance(resource, LMService):
        assert validate_server_pod(resource) == []
    if isinstance(resource, LMTuningJob):
        template = LMTrainingJob(
            metadata={"name": f"{resource.metadata.name}-t0"}, spec=resource.spec.trial_template
        )
        assert validate_worker_pod(template) == []


@pytest.mark.parametrize("kind", [r.identity.kind for r in RESOURCE_KINDS])
def test_the_examples_show_every_field(kind: str) -> None:
    known = schema_paths(kind)
    shown = shown_fields(kind, known)
    if kind in TEMPLATES:
        prefix, other, part = TEMPLATES[kind]
        shown_there = shown_fields(other, schema_paths(other))
        shown |= {
            p for p in known if p.startswith(prefix) and part + p[len(prefix) :] in shown_there
        }
        assert prefix in shown, f"docs/user-guide.md shows no {prefix} of {kind}"
    missing = sorted(known - shown)
    assert not missing, f"docs/user-guide.md shows no example of these {kind} fields: {missing}"
