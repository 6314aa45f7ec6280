"""The only module that talks to the Kubernetes API (the official `kubernetes` client).

Calls are synchronous: kopf runs sync handlers in its thread pool. Objects travel as
plain dicts in the API's own (camelCase) shape. Creating what already exists and
deleting what is already gone both succeed, so every call is safe to repeat.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client import ApiClient, ApiException, CoreV1Api, CustomObjectsApi
from kubernetes.config import ConfigException

from lmoperator.api.trainingjob import GROUP, VERSION

TRAINING_JOBS = "lmtrainingjobs"
COMPONENT = "elasticlm-operator"
REQUEST_TIMEOUT_SECONDS = 15


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, what: str, status: int, detail: str) -> None:
        self.status = status
        super().__init__(f"{what} failed: {status} {detail}".strip())


def load_config() -> None:
    """In-cluster configuration (service account), else the kubeconfig (KUBECONFIG)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


def _error(what: str, exc: Exception) -> KubeError:
    if isinstance(exc, ApiException):
        detail = str(exc.reason or "")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(exc.body or "{}").get("message") or detail
        return KubeError(what, int(exc.status or 0), detail)
    return KubeError(what, 0, f"{type(exc).__name__}: {exc}")


def _json(response: Any) -> Any:
    return json.loads(response.data or b"null")


class Kube:
    """API calls on behalf of the operator."""

    def __init__(self, api_client: ApiClient | None = None) -> None:
        self.api_client = api_client or ApiClient()
        self.core = CoreV1Api(self.api_client)
        self.custom = CustomObjectsApi(self.api_client)
        self.instance = socket.gethostname()

    def _call(self, what: str, fn: Any, *args: Any, ok: tuple[int, ...] = (), **kw: Any) -> Any:
        """fn(*args), raw JSON back; statuses in `ok` (409, 404) answer None."""
        try:
            response = fn(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kw
            )
        except ApiException as exc:
            if exc.status in ok:
                return None
            raise _error(what, exc) from exc
        except Exception as exc:  # urllib3 and socket errors: the server was not reached
            raise _error(what, exc) from exc
        return _json(response)

    # -- reading ----------------------------------------------------------------------

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = self._call(
            "list pods", self.core.list_namespaced_pod, namespace, label_selector=selector
        )
        return list(result.get("items") or [])

    def list_services(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = self._call(
            "list services", self.core.list_namespaced_service, namespace, label_selector=selector
        )
        return list(result.get("items") or [])

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The LMTrainingJob as stored now, or None when it is gone."""
        result = self._call(
            f"get {TRAINING_JOBS}/{name}",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            TRAINING_JOBS,
            name,
            ok=(404,),
        )
        return dict(result) if isinstance(result, dict) else None

    # -- children ---------------------------------------------------------------------

    def create_pod(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        """True when created, False when a pod of that name already existed."""
        name = manifest["metadata"]["name"]
        created = self._call(
            f"create pod {name}", self.core.create_namespaced_pod, namespace, manifest, ok=(409,)
        )
        return created is not None

    def create_service(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        name = manifest["metadata"]["name"]
        created = self._call(
            f"create service {name}",
            self.core.create_namespaced_service,
            namespace,
            manifest,
            ok=(409,),
        )
        return created is not None

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> bool:
        """True when the deletion was requested, False when the pod was already gone."""
        kw: dict[str, Any] = {"propagation_policy": "Background"}
        if grace_seconds is not None:
            kw["grace_period_seconds"] = grace_seconds
        result = self._call(
            f"delete pod {name}", self.core.delete_namespaced_pod, name, namespace, ok=(404,), **kw
        )
        return result is not None

    # -- the custom resource ----------------------------------------------------------

    def patch_job_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """A JSON merge patch of the status subresource (null removes a field)."""
        self._call(
            f"patch status of {TRAINING_JOBS}/{name}",
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            TRAINING_JOBS,
            name,
            {"status": dict(patch)},
            ok=(404,),
            _content_type="application/merge-patch+json",
        )

    def delete_job(self, namespace: str, name: str) -> None:
        self._call(
            f"delete {TRAINING_JOBS}/{name}",
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            TRAINING_JOBS,
            name,
            ok=(404,),
            propagation_policy="Background",
        )

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
            "reportingComponent": f"{GROUP}/operator",
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call("create event", self.core.create_namespaced_event, namespace, event)
