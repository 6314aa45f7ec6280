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
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import kubernetes
import urllib3
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
        self.detail = detail
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


class NoClusterError(Exception):
    """The kubeconfig names no usable cluster (no such context, a broken file)."""


class NoKubeconfigError(NoClusterError):
    """No kubeconfig at all, and not in a pod."""


def client_for_user(kubeconfig: str | None, context: str | None) -> tuple[ApiClient, str]:
    """A client for a command-line user, as kubectl picks one, and its namespace.

    The kubeconfig comes from `kubeconfig`, else KUBECONFIG (a list of files, merged),
    else ~/.kube/config; the context from `context`, else the kubeconfig's current one.
    Without a kubeconfig, inside a pod, the pod's service account is used. The namespace
    is the context's, else the pod's, else "default".
    """
    try:
        contexts, current = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
    except (ConfigException, OSError) as exc:
        if kubeconfig is None and context is None:
            with contextlib.suppress(ConfigException):
                config = kubernetes.client.Configuration()
                kubernetes.config.load_incluster_config(config)  # type: ignore[no-untyped-call]
                return ApiClient(config), _pod_namespace()
        raise NoKubeconfigError(f"no cluster is configured ({exc})") from exc
    chosen = current
    if context is not None:
        chosen = next((c for c in contexts or [] if c.get("name") == context), None)
        if chosen is None:
            names = ", ".join(sorted(str(c.get("name")) for c in contexts or [])) or "none"
            raise NoClusterError(f'context "{context}" is not in the kubeconfig (it has: {names})')
    try:
        client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
    except (ConfigException, OSError) as exc:
        raise NoClusterError(f"the kubeconfig cannot be used: {exc}") from exc
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return client, str(namespace)


def _pod_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


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

    def list(
        self,
        kind: kinds.ResourceKind,
        namespace: str | None,
        selector: str = "",
        field_selector: str = "",
    ) -> list[dict[str, Any]]:
        """The objects of a namespace (None: of every namespace) that match the selectors."""
        query = {"labelSelector": selector, "fieldSelector": field_selector}
        result = self._request(
            f"list {kind.plural}",
            "GET",
            kind.path(namespace),
            query={k: v for k, v in query.items() if v},
        )
        return list((result or {}).get("items") or [])

    def pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None = None,
        follow: bool = False,
        tail_lines: int | None = None,
        timestamps: bool = False,
    ) -> Iterator[str]:
        """A container's log, line by line (without the newline); with `follow`, the lines
        keep coming until the container ends or the caller closes the iterator."""
        query: dict[str, Any] = {"follow": "true" if follow else None, "container": container}
        query["tailLines"] = tail_lines
        query["timestamps"] = "true" if timestamps else None
        what = f"read the log of pod {name}"
        try:
            request = self.api_client.param_serialize(
                "GET",
                kinds.POD.path(namespace, name) + "/log",
                query_params=[(k, v) for k, v in query.items() if v is not None],
                header_params={"Accept": "application/json, */*"},  # as kubectl asks
                auth_settings=["BearerToken"],
            )
            # A followed log may stay quiet for long: only connecting is bounded.
            timeout = (REQUEST_TIMEOUT_SECONDS, None) if follow else REQUEST_TIMEOUT_SECONDS
            response = self.api_client.call_api(*request, _request_timeout=timeout)
        except Exception as exc:  # urllib3 and socket errors: the server was not reached
            raise KubeError(what, 0, f"{type(exc).__name__}: {exc}") from exc
        raw = response.response  # urllib3's response, not read yet
        try:
            status = int(response.status)
            if not 200 <= status < 300:
                detail = str(response.reason or "")
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    detail = json.loads(raw.data or b"{}").get("message") or detail
                raise KubeError(what, status, detail)
            pending = b""
            try:
                for chunk in raw.stream(4096, decode_content=True):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", errors="replace")
            except urllib3.exceptions.HTTPError as exc:  # the connection broke mid-stream
                raise KubeError(what, 0, f"{type(exc).__name__}: {exc}") from exc
            if pending:
                yield pending.decode("utf-8", errors="replace")
        finally:
            raw.release_conn()

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
