"""The only module that talks to the Kubernetes API (the official `kubernetes` client).

`KubeApi` is the seam: the handlers use nothing else, and the tests' fake implements
it. Calls are synchronous (kopf runs sync handlers in its thread pool) and generic over
the kinds of `lmoperator.api.kinds`: the REST path comes from the registry, objects
travel as plain dicts in the API's own camelCase shape. Creating what already exists
and deleting what is already gone both succeed, so every call is safe to repeat.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.config import ConfigException

from lmoperator.api import kinds

COMPONENT = "elasticlm-operator"
REQUEST_TIMEOUT_SECONDS = 15
MERGE_PATCH = "application/merge-patch+json"

Subresource = Literal["", "scale", "status"]


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, what: str, status: int, detail: str) -> None:
        self.status = status
        super().__init__(f"{what} failed: {status} {detail}".strip())


class KubeApi(Protocol):
    """What the handlers need from the API server."""

    def get(self, kind: kinds.ResourceKind, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(
        self, kind: kinds.ResourceKind, namespace: str, selector: str
    ) -> list[dict[str, Any]]: ...

    def create(
        self, kind: kinds.ResourceKind, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The created object; None when one of that name already existed."""
        ...

    def patch(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: Subresource = "",
    ) -> dict[str, Any] | None:
        """A JSON merge patch (null removes a field); the object after it, or None when
        it is gone."""
        ...

    def delete(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        grace_seconds: int | None = None,
    ) -> bool:
        """True when the deletion was requested, False when the object was already gone."""
        ...

    def create_event(
        self, involved: Mapping[str, str], reason: str, message: str, type_: str = "Normal"
    ) -> None: ...


def load_config() -> None:
    """In-cluster configuration (service account), else the kubeconfig (KUBECONFIG)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


class Kube:
    """KubeApi over the `kubernetes` client's connection pool, configuration and auth."""

    def __init__(self, api_client: ApiClient | None = None) -> None:
        self.api_client = api_client or ApiClient()
        self.instance = socket.gethostname()

    def _request(
        self,
        what: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        missing_ok: tuple[int, ...] = (),
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> Any:
        """The decoded JSON answer; None for a status in `missing_ok` (404, 409)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            request = self.api_client.param_serialize(
                method,
                path,
                query_params=[(k, v) for k, v in (query or {}).items()],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(*request, _request_timeout=timeout)
            data = response.read()  # type: ignore[no-untyped-call]
        except Exception as exc:  # urllib3 and socket errors: the server was not reached
            raise KubeError(what, 0, f"{type(exc).__name__}: {exc}") from exc
        status = int(response.status)
        if status in missing_ok:
            return None
        if not 200 <= status < 300:
            detail = str(response.reason or "")
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                detail = json.loads(data or b"{}").get("message") or detail
            raise KubeError(what, status, detail)
        return json.loads(data or b"null")

    def get(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> dict[str, Any] | None:
        result = self._request(
            f"get {kind.plural}/{name}",
            "GET",
            kind.path(namespace, name),
            missing_ok=(404,),
            timeout=timeout,
        )
        return dict(result) if isinstance(result, dict) else None

    def list(self, kind: kinds.ResourceKind, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = self._request(
            f"list {kind.plural}",
            "GET",
            kind.path(namespace),
            query={"labelSelector": selector} if selector else None,
        )
        return list((result or {}).get("items") or [])

    def create(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        manifest: Mapping[str, Any],
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> dict[str, Any] | None:
        name = manifest["metadata"]["name"]
        result = self._request(
            f"create {kind.singular} {name}",
            "POST",
            kind.path(namespace),
            body=dict(manifest),
            missing_ok=(409,),
            timeout=timeout,
        )
        return dict(result) if isinstance(result, dict) else None

    def replace(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        manifest: Mapping[str, Any],
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> dict[str, Any] | None:
        """An update (PUT) of the whole object: with `metadata.resourceVersion` set, the
        server refuses it with 409 when the object changed since it was read. The object
        after it; None on such a conflict."""
        name = manifest["metadata"]["name"]
        result = self._request(
            f"update {kind.singular} {name}",
            "PUT",
            kind.path(namespace, name),
            body=dict(manifest),
            missing_ok=(409,),
            timeout=timeout,
        )
        return dict(result) if isinstance(result, dict) else None

    def patch(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        subresource: Subresource = "",
    ) -> dict[str, Any] | None:
        path = kind.path(namespace, name) + (f"/{subresource}" if subresource else "")
        target = f"{subresource} of " if subresource else ""
        result = self._request(
            f"patch {target}{kind.plural}/{name}",
            "PATCH",
            path,
            body=dict(patch),
            content_type=MERGE_PATCH,
            missing_ok=(404,),
        )
        return dict(result) if isinstance(result, dict) else None

    def delete(
        self,
        kind: kinds.ResourceKind,
        namespace: str,
        name: str,
        grace_seconds: int | None = None,
    ) -> bool:
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        result = self._request(
            f"delete {kind.singular} {name}",
            "DELETE",
            kind.path(namespace, name),
            body=options,
            missing_ok=(404,),
        )
        return result is not None

    def create_event(
        self,
        involved: Mapping[str, str],
        reason: str,
        message: str,
        type_: str = "Normal",
    ) -> None:
        """A core/v1 Event about `involved` ({apiVersion, kind, name, namespace, uid})."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = involved["namespace"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": f"{kinds.GROUP}/operator",
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._request("create event", "POST", kinds.EVENT.path(namespace), body=event)
