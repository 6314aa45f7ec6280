"""The HTTP plumbing the handlers share: URL and Accept parsing, query values, Status
errors of the HTTP layer, and the `Handlers` base (responses, request bodies).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from devcluster.apiserver.cluster import Cluster
from devcluster.apiserver.codec import (
    JSON_TYPE,
    MAX_BODY,
    dumps,
    parse_json,
    parse_yaml,
    unsupported_media_type,
)
from devcluster.protobuf import decode_protobuf
from devcluster.store import APIError, Obj, bad_request


@dataclass
class Route:
    """What a resource URL addresses."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch: bool = False


def parse_api_path(parts: list[str]) -> Route | None:
    """`api/v1/...` or `apis/<g>/<v>/...` split into a Route (None: not an API path)."""
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    route = Route(group, version)
    if rest[:1] == ["watch"]:
        route.watch = True
        rest = rest[1:]
    if not rest:
        return route
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (group == "" and rest[2] in ("status", "finalize") and len(rest) == 3)
    ):
        route.namespace = rest[1]
        rest = rest[2:]
    route.plural = rest[0]
    if len(rest) >= 2:
        route.name = rest[1]
    if len(rest) >= 3:
        route.subresource = rest[2]
    if len(rest) >= 4:
        route.subresource = "/".join(rest[2:])
    return route


@dataclass
class Accept:
    table: str | None = None  # "meta.k8s.io/v1" or "meta.k8s.io/v1beta1"
    partial: str | None = None  # PartialObjectMetadata(List)
    yaml: bool = False


def parse_accept(header: str) -> Accept:
    result = Accept()
    acceptable = False
    for entry in header.split(","):
        parts = [p.strip() for p in entry.split(";")]
        mime = parts[0].lower()
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if mime in ("application/json", "*/*", "application/*", ""):
            as_kind = params.get("as")
            if as_kind == "Table" and params.get("g") == "meta.k8s.io":
                if result.table is None and params.get("v") in ("v1", "v1beta1"):
                    result.table = f"meta.k8s.io/{params['v']}"
                    acceptable = True
                continue
            if as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
                if params.get("g") == "meta.k8s.io" and result.partial is None:
                    result.partial = f"meta.k8s.io/{params.get('v', 'v1')}"
                    acceptable = True
                continue
            if as_kind:
                continue
            acceptable = True
        elif mime in ("application/yaml", "text/yaml"):
            if not acceptable:
                result.yaml = True
            acceptable = True
    if not acceptable and header.strip():
        raise APIError(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    return result


def query_bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def query_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise bad_request(f"invalid {name}: {value!r} is not an integer") from exc


def partial_metadata(obj: Obj, api_version: str) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": obj.get("metadata", {}),
    }


def too_large() -> APIError:
    return APIError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}")


def not_found_path() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed() -> APIError:
    return APIError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


class Handlers:
    """What the request handlers share: the cluster they serve, the open streams, and
    reading requests and writing responses.
    """

    cluster: Cluster
    _streams: set[asyncio.Event]

    @staticmethod
    def error_response(exc: APIError) -> web.Response:
        return web.Response(status=exc.code, body=dumps(exc.status()), content_type=JSON_TYPE)

    @staticmethod
    def respond(
        request: web.Request,
        obj: Any,
        status: int = 200,
        warnings: list[str] | None = None,
        accept: Accept | None = None,
    ) -> web.Response:
        headers: dict[str, str] = {}
        response = web.Response(status=status)
        if accept is not None and accept.yaml:
            response.body = yaml.safe_dump(obj, sort_keys=False).encode()
            response.content_type = "application/yaml"
        else:
            response.body = dumps(obj)
            response.content_type = JSON_TYPE
        for key, value in headers.items():
            response.headers[key] = value
        for warning in dict.fromkeys(warnings or []):
            text = warning.replace('"', '\\"').replace("\n", " ")
            response.headers.add("Warning", f'299 - "{text}"')
        return response

    async def read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise too_large()
        data = await request.read()
        if len(data) > MAX_BODY:
            raise too_large()
        return data

    async def read_object(self, request: web.Request) -> Any:
        return self.decode_object(await self.read_body(request), request)

    def decode_object(self, raw: bytes, request: web.Request) -> Any:
        """A request body by its Content-Type: JSON, YAML or Kubernetes protobuf."""
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in ("application/yaml", "text/yaml", "application/x-yaml"):
            return parse_yaml(raw)
        if content_type == "application/vnd.kubernetes.protobuf":
            return decode_protobuf(raw)
        if content_type in ("", JSON_TYPE, "*/*"):
            return parse_json(raw)
        raise unsupported_media_type(
            content_type, (JSON_TYPE, "application/yaml", "application/vnd.kubernetes.protobuf")
        )
