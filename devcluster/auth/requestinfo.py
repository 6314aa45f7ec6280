"""What a request asks for, in the terms authorization uses: kube-apiserver's
RequestInfo (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go) and
authorizer.Attributes.

Paths with fewer than three segments, and paths outside `/api` and `/apis`, are
non-resource requests (`/version`, `/healthz`, `/api`, `/apis/apps/v1`, ...) whose verb
is the lower-case HTTP method. Resource requests map the method to a verb: GET of one
object `get`, GET of a collection `list`, either with `?watch=true` (or the old
`/watch/` prefix) `watch`; POST `create`; PUT `update`; PATCH `patch`; DELETE of one
object `delete`, of a collection `deletecollection`. `/namespaces/NS/...` sets the
namespace (also for the namespace object itself, so that a RoleBinding can grant reading
one's own namespace), and a list or watch (by `?watch`, not by the `/watch/` prefix)
with the field selector `metadata.name=X` carries the name X, so that `resourceNames`
can allow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from devcluster.auth.users import UserInfo

API_PREFIXES = ("api", "apis")
NAMESPACE_SUBRESOURCES = ("status", "finalize")
METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(frozen=True)
class Attributes:
    """One request as an authorizer sees it (authorizer.AttributesRecord)."""

    user: UserInfo
    verb: str
    path: str = ""
    resource_request: bool = False
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


def _name_from_field_selector(selector: str) -> str:
    """X when the field selector requires `metadata.name=X` (or `==X`), else ""."""
    for term in selector.split(","):
        key, op, value = term.partition("==") if "==" in term else term.partition("=")
        if key.strip() == "metadata.name" and op and not key.endswith("!"):
            value = value.strip()
            if value and "/" not in value and value not in (".", ".."):
                return value
    return ""


def request_attributes(
    user: UserInfo, method: str, path: str, query: Mapping[str, str]
) -> Attributes:
    parts = [p for p in path.split("/") if p]
    method = method.upper()
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return Attributes(user, method.lower(), path)
    rest = parts[1:]
    group = ""
    if parts[0] == "apis":
        if len(rest) < 3:
            return Attributes(user, method.lower(), path)
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = METHOD_VERBS.get(method, "")
    if rest[:1] == ["watch"]:
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if not name and verb == "get":
        watch = (query.get("watch") or "").lower() in ("1", "true")
        verb = "watch" if watch else "list"
        name = _name_from_field_selector(query.get("fieldSelector") or "")
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(
        user,
        verb,
        path,
        True,
        group,
        version,
        resource,
        subresource,
        namespace,
        name,
    )
