"""LMTuningJob's API: which fields a parameter may set, and the trial names."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmoperator.api import InvalidResourceError, LMTuningJob, parse_resource
from lmoperator.api.tuningjob import (
    MAX_TRIALS,
    MAX_TUNING_NAME_LENGTH,
    TUNABLE_FIELDS,
    parse_value,
    trial_name,
    value_fits,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "tuning-job.yaml"


def example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def problems(doc: dict[str, Any]) -> list[str]:
    try:
        parse_resource(doc)
    except InvalidResourceError as exc:
        return exc.problems
    return []


def test_the_tunable_fields_come_from_the_training_job_model() -> None:
    assert TUNABLE_FIELDS["training.learningRate"].type == "number"
    assert TUNABLE_FIELDS["training.warmupSteps"].type == "integer"
    assert TUNABLE_FIELDS["model.size.hiddenSize"].type == "integer"
    assert TUNABLE_FIELDS["training.precision"].enum == ("auto", "fp32", "bf16", "fp16")
    assert TUNABLE_FIELDS["model.preset"].type == "enum"
    # What the tuner owns, what every trial shares, and the trial's length are not tunable.
    for path in (
        "replicas",
        "elastic.maxReplicas",
        "checkpoint.path",
        "training.steps",
        "data.path",
        "worker.image",
        "model.hf.path",
        "runPolicy.backoffLimit",
    ):
        assert path not in TUNABLE_FIELDS, path


def test_the_example_is_valid() -> None:
    job = parse_resource(example())
    assert isinstance(job, LMTuningJob)
    assert [p.name for p in job.spec.parameters] == ["learningRate", "warmupSteps"]
    assert job.spec.objective.direction == "Minimize"


def test_a_typo_in_a_path_names_the_path() -> None:
    doc = example()
    doc["spec"]["parameters"][0]["path"] = "training.learnigRate"
    [problem] = problems(doc)
    assert problem.startswith("spec.parameters[0].path: 'training.learnigRate' is not a tunable")


def test_objective_direction_defaults_by_metric() -> None:
    doc = example()
    doc["spec"]["objective"] = {"metric": "tokensPerSecond"}
    doc["spec"]["earlyStopping"] = {"policy": "None"}
    job = parse_resource(doc)
    assert isinstance(job, LMTuningJob)
    assert job.spec.objective.direction == "Maximize"


@pytest.mark.parametrize(
    ("path", "text", "fits", "value"),
    [
        ("training.warmupSteps", "20", True, 20),
        ("training.warmupSteps", "2.5", False, None),
        ("training.warmupSteps", "20\n", False, None),
        ("training.learningRate", "1e-3", True, 0.001),
        ("training.learningRate", "fast", False, None),
        ("training.precision", "bf16", True, "bf16"),
        ("training.precision", "fp8", False, None),
        ("checkpoint.async", "true", False, None),  # not tunable: no field to fit
    ],
)
def test_categorical_values_fit_their_field(path: str, text: str, fits: bool, value: Any) -> None:
    field = TUNABLE_FIELDS.get(path)
    if field is None:
        assert not fits
        return
    assert value_fits(field, text) is fits
    if fits:
        assert parse_value(field, text) == value


def test_trial_names_stay_valid_training_job_names() -> None:
    longest = trial_name("a" * MAX_TUNING_NAME_LENGTH, MAX_TRIALS - 1)
    assert len(longest) == 48
    doc = copy.deepcopy(example())
    doc["metadata"]["name"] = "a" * (MAX_TUNING_NAME_LENGTH + 1)
    [problem] = problems(doc)
    assert f"must be at most {MAX_TUNING_NAME_LENGTH} characters" in problem


def test_devclusters_api_server_refuses_a_typo_naming_the_path() -> None:
    """What `kubectl apply` meets: the CRD's rules, as devcluster's API server admits."""
    from devcluster.schema.admission import admit
    from lmoperator.api.crd import RESOURCE_KINDS, crd_manifest

    [tuning] = [r for r in RESOURCE_KINDS if r.kind == "LMTuningJob"]
    schema = crd_manifest(tuning)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert admit(schema, example()).errors == []
    doc = example()
    doc["spec"]["parameters"][0]["path"] = "training.learnigRate"
    [error] = admit(schema, doc).errors
    assert error.field == "spec.parameters[0].path"
    assert error.message.startswith("'training.learnigRate' is not a tunable field")
