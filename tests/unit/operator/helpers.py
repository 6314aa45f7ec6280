"""Typed jobs and observed children for the operator's unit tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from lmoperator.api import LMTrainingJob, parse_resource

EXAMPLE = Path(__file__).resolve().parents[3] / "manifests" / "examples" / "training-job.yaml"
BASE: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
BASE["metadata"]["namespace"] = "ns"


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def job_doc(**spec: Any) -> dict[str, Any]:
    """The example job (2 workers, elastic 1-3, 300 steps) with `spec` merged in."""
    return _merge(copy.deepcopy(BASE), {"spec": spec})


def make_job(**spec: Any) -> LMTrainingJob:
    job = parse_resource(job_doc(**spec))
    assert isinstance(job, LMTrainingJob)
    return job
