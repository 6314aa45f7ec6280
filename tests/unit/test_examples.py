"""The example manifests are valid and fit together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmoperator.api import RESOURCE_TYPES, LMService, LMTrainingJob, Resource, parse_resource

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))

# The kind each known example holds; an example added later must at least be a
# known kind (checked below).
EXPECTED_KINDS = {
    "training-job.yaml": "LMTrainingJob",
    "training-job-autoscaled.yaml": "LMTrainingJob",
    "service.yaml": "LMService",
    "finetune-smollm2.yaml": "LMTrainingJob",
}


def _documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _parse_single(path: Path) -> Resource:
    docs = _documents(path)
    assert len(docs) == 1, f"{path.name}: expected one document, found {len(docs)}"
    return parse_resource(docs[0])


def test_the_examples_are_there() -> None:
    assert {p.name for p in EXAMPLE_FILES} >= set(EXPECTED_KINDS)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_parses_with_its_kind(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path.name} holds no manifest"
    for doc in docs:
        resource = parse_resource(doc)
        assert resource.kind in RESOURCE_TYPES
        assert type(resource) is RESOURCE_TYPES[resource.kind]
        if path.name in EXPECTED_KINDS:
            assert resource.kind == EXPECTED_KINDS[path.name]
        # What the operator would store keeps everything the example says.
        assert parse_resource(json.loads(json.dumps(resource.to_wire()))) == resource


def test_example_service_serves_the_example_training_job() -> None:
    job = _parse_single(EXAMPLES / "training-job.yaml")
    svc = _parse_single(EXAMPLES / "service.yaml")
    assert isinstance(job, LMTrainingJob)
    assert isinstance(svc, LMService)
    assert svc.spec.model.from_training_job is not None
    assert svc.spec.model.from_training_job.name == job.metadata.name


def test_example_training_job_keeps_data_and_checkpoints_on_claims() -> None:
    job = _parse_single(EXAMPLES / "training-job.yaml")
    assert isinstance(job, LMTrainingJob)
    assert job.spec.data.claim_name
    assert job.spec.checkpoint is not None
    assert job.spec.checkpoint.claim_name
