"""Request bodies: the media types, JSON and YAML decoding with a depth limit, and
patch documents applied to an object.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from devcluster import patch as patching
from devcluster.resources.types import ResourceType
from devcluster.store import APIError, Obj, bad_request

MAX_BODY = 3 * 1024 * 1024  # Kubernetes' request body limit
JSON_TYPE = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def unsupported_media_type(content_type: str, accepted: tuple[str, ...]) -> APIError:
    return APIError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
    )


MAX_DEPTH = 100  # deeper documents are refused (Python recursion would not cope)


def check_depth(document: Any) -> Any:
    """Refuse documents nested more than MAX_DEPTH levels (iteratively, no recursion)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise bad_request(f"the object is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return document


def parse_json(raw: bytes) -> Any:
    try:
        return check_depth(json.loads(raw))
    except RecursionError as exc:
        raise bad_request(f"the object is nested more than {MAX_DEPTH} levels deep") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"error decoding the request body as JSON: {exc}") from exc


def parse_yaml(raw: bytes) -> Any:
    try:
        return check_depth(yaml.safe_load(raw))
    except RecursionError as exc:
        raise bad_request(f"the object is nested more than {MAX_DEPTH} levels deep") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise bad_request(f"error decoding YAML: {exc}") from exc


def apply_patch(rt: ResourceType, old: Obj, content_type: str, document: Any) -> Obj:
    try:
        if content_type == JSON_PATCH:
            result = patching.json_patch(old, document)
        elif content_type == MERGE_PATCH:
            if not isinstance(document, dict):
                raise bad_request(
                    "json: cannot unmarshal the patch into Go value of type map[string]interface {}"
                )
            result = patching.json_merge_patch(old, document)
        else:
            result = patching.strategic_merge_patch(old, document, rt.kind)
    except patching.PatchError as exc:
        if exc.http_status == 400:
            raise bad_request(str(exc)) from exc
        if exc.http_status == 413:
            raise APIError(413, "RequestEntityTooLarge", str(exc)) from exc
        raise APIError(
            422,
            "Invalid",
            patching.JSON_PATCH_FAILURE_MESSAGE,
            {"causes": [{"reason": "UnexpectedServerResponse", "message": str(exc)}]},
        ) from exc
    if not isinstance(result, dict):
        raise bad_request("the patched object must be a JSON object")
    return result
