"""The ElasticLM API (group elasticlm.io, version v1alpha1): the one source of truth.

CRDs (`elasticlm crds`), validation of manifests and the operator all read these
models; nothing else defines a field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from lmoperator.api.errors import InvalidResourceError, describe_validation_error
from lmoperator.api.kinds import API_VERSION, GROUP, SERVICE, TRAINING_JOB, TUNING_JOB, VERSION
from lmoperator.api.service import LMService, LMServiceSpec, LMServiceStatus
from lmoperator.api.trainingjob import (
    LMTrainingJob,
    LMTrainingJobSpec,
    LMTrainingJobStatus,
)
from lmoperator.api.tuningjob import LMTuningJob, LMTuningJobSpec, LMTuningJobStatus

Resource = LMTrainingJob | LMService | LMTuningJob

RESOURCE_TYPES: dict[str, type[LMTrainingJob] | type[LMService] | type[LMTuningJob]] = {
    TRAINING_JOB.kind: LMTrainingJob,
    SERVICE.kind: LMService,
    TUNING_JOB.kind: LMTuningJob,
}
SHORT_NAMES = {k.kind: k.short_name for k in (TRAINING_JOB, SERVICE, TUNING_JOB)}


# Free-form fields keep their nulls: in a strategic-merge patch, null deletes a key.
FREE_FORM_FIELDS = frozenset({"podTemplate"})


def _without_nulls(value: Any) -> Any:
    """Drop null fields, as the API server does before defaulting (none is nullable)."""
    if isinstance(value, Mapping):
        return {
            k: v if k in FREE_FORM_FIELDS else _without_nulls(v)
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def parse_resource(doc: Any) -> Resource:
    """Validate one manifest (a dict as read from YAML or JSON) into its typed model.

    Validation is strict, as the API server's is: no string is taken for a number or a
    boolean, field names are the camelCase ones of the CRD, infinities are refused, and
    null fields are dropped (then defaulted).
    Raises InvalidResourceError listing every problem, each naming its field.
    """
    if not isinstance(doc, Mapping):
        got = {type(None): "an empty document", list: "a list", str: "a string"}.get(
            type(doc), "a number" if isinstance(doc, int | float) else type(doc).__name__
        )
        raise InvalidResourceError(
            "document", [f"must be a mapping with apiVersion, kind, metadata and spec, got {got}"]
        )
    kind = doc.get("kind")
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    what = f"{kind or '(no kind)'}/{name}" if name else str(kind or "(no kind)")
    if kind not in RESOURCE_TYPES:
        raise InvalidResourceError(
            what, [f"kind: must be one of {', '.join(RESOURCE_TYPES)} (got {kind!r})"]
        )
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidResourceError(
            what, [f"apiVersion: must be {API_VERSION} (got {doc.get('apiVersion')!r})"]
        )
    model = RESOURCE_TYPES[kind]
    try:
        # JSON mode keeps enums and RFC 3339 times as strings while staying strict;
        # YAML timestamps (datetime objects) are turned back into text first.
        text = json.dumps(_without_nulls(doc), default=str)
        return model.model_validate_json(text, strict=True, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise InvalidResourceError(
            what, describe_validation_error(exc, explain=SHORT_NAMES[kind])
        ) from exc


__all__ = [
    "API_VERSION",
    "GROUP",
    "RESOURCE_TYPES",
    "SHORT_NAMES",
    "VERSION",
    "InvalidResourceError",
    "LMService",
    "LMServiceSpec",
    "LMServiceStatus",
    "LMTrainingJob",
    "LMTrainingJobSpec",
    "LMTrainingJobStatus",
    "LMTuningJob",
    "LMTuningJobSpec",
    "LMTuningJobStatus",
    "Resource",
    "describe_validation_error",
    "parse_resource",
]
