"""The ElasticLM API (group elasticlm.io, version v1alpha1): the one source of truth.

CRDs (`elasticlm crds`), validation of manifests and the operator all read these
models; nothing else defines a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from lmoperator.api.errors import InvalidResourceError, describe_validation_error
from lmoperator.api.service import LMService, LMServiceSpec, LMServiceStatus
from lmoperator.api.trainingjob import (
    API_VERSION,
    GROUP,
    VERSION,
    LMTrainingJob,
    LMTrainingJobSpec,
    LMTrainingJobStatus,
)

Resource = LMTrainingJob | LMService

RESOURCE_TYPES: dict[str, type[LMTrainingJob] | type[LMService]] = {
    "LMTrainingJob": LMTrainingJob,
    "LMService": LMService,
}
SHORT_NAMES = {"LMTrainingJob": "lmtj", "LMService": "lms"}


def parse_resource(doc: Any) -> Resource:
    """Validate one manifest (a dict as read from YAML) into its typed model.

    Raises InvalidResourceError listing every problem, each naming its field.
    """
    if not isinstance(doc, Mapping):
        raise InvalidResourceError("document", [f"must be a mapping, got {type(doc).__name__}"])
    kind = doc.get("kind")
    name = (
        (doc.get("metadata") or {}).get("name")
        if isinstance(doc.get("metadata"), Mapping)
        else None
    )
    what = f"{kind}/{name}" if name else str(kind)
    if kind not in RESOURCE_TYPES:
        raise InvalidResourceError(
            what,
            [f"kind: must be one of {', '.join(RESOURCE_TYPES)} (got {kind!r})"],
        )
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidResourceError(
            what, [f"apiVersion: must be {API_VERSION} (got {doc.get('apiVersion')!r})"]
        )
    model = RESOURCE_TYPES[kind]
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise InvalidResourceError(
            what, describe_validation_error(exc, explain=SHORT_NAMES[kind] + ".spec")
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
    "Resource",
    "describe_validation_error",
    "parse_resource",
]
