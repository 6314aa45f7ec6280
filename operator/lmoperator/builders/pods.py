"""What every pod the operator makes shares, whatever its owner's kind (pure).

Labels and owner references, the restricted security defaults, scheduling from a
`WorkerSpec` and `SchedulingSpec`, and `pod_problems`: what a user's pod template may
not do to a generated pod (the CRD's free-form podTemplate cannot say it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmoperator.api import kinds
from lmoperator.api.common import WorkerSpec

ROLE_LABEL = "elasticlm.io/role"
INDEX_LABEL = "elasticlm.io/index"
# On a worker pod that was a warm spare: {"index": i, "expected": replicas}, the order it
# was promoted with (the operator repeats it until the pod trains).
PROMOTED_ANNOTATION = "elasticlm.io/promoted"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
NON_ROOT_ID = 1000


class InvalidPodError(ValueError):
    """The pod the spec asks for is not allowed; `problems` name the fields."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def owner_reference(kind: kinds.ResourceKind, name: str, uid: str) -> dict[str, Any]:
    """The controller reference every child carries: garbage collection removes the
    child with its owner, and the operator only touches children it controls."""
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    owner: kinds.ResourceKind,
    owner_name: str,
    owner_uid: str,
    namespace: str | None,
    name: str,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": dict(labels),
        "ownerReferences": [owner_reference(owner, owner_name, owner_uid)],
    }
    if namespace:
        meta["namespace"] = namespace
    return meta


def pod_security() -> dict[str, Any]:
    """The pod-level half of the Kubernetes "restricted" Pod Security profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_ID,
        "runAsGroup": NON_ROOT_ID,
        "fsGroup": NON_ROOT_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    """The container-level half, plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


@dataclass(frozen=True)
class Scheduling:
    """Where and how pods are scheduled (runPolicy.scheduling's fields, or a default)."""

    scheduler_name: str | None = None
    priority_class_name: str | None = None
    queue: str | None = None


def apply_scheduling(pod: dict[str, Any], worker: WorkerSpec, scheduling: Scheduling) -> None:
    """Scheduler, priority, queue, node selection and service account, in place."""
    spec = pod["spec"]
    if worker.service_account_name:
        spec["serviceAccountName"] = worker.service_account_name
    if worker.node_selector:
        spec["nodeSelector"] = dict(worker.node_selector)
    if worker.tolerations:
        spec["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in worker.tolerations
        ]
    if scheduling.scheduler_name:
        spec["schedulerName"] = scheduling.scheduler_name
    if scheduling.priority_class_name:
        spec["priorityClassName"] = scheduling.priority_class_name
    if scheduling.queue:
        pod["metadata"]["labels"][QUEUE_LABEL] = scheduling.queue


def set_image(container: dict[str, Any], worker: WorkerSpec, default_image: str) -> None:
    container["image"] = worker.image or default_image
    if worker.image_pull_policy is not None:
        container["imagePullPolicy"] = worker.image_pull_policy.value


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in ("initContainers", "containers"):
        for item in spec.get(field) or []:
            if isinstance(item, Mapping):
                yield f"spec.{field}[{item.get('name')}]", item


@dataclass(frozen=True)
class PodRules:
    """What a kind's generated pod insists on, for `pod_problems`."""

    container: str  # the main container (its command is the operator's)
    template_path: str  # where the user's template is, for messages
    reserved_env: frozenset[str] = frozenset()
    restart_policy: str | None = None  # the restartPolicy the pod must keep
    restart_policy_hint: str = ""


def pod_problems(
    generated: Mapping[str, Any],
    merged: Mapping[str, Any],
    template: Mapping[str, Any],
    rules: PodRules,
) -> Iterator[str]:
    """Why `merged` (the generated pod with the template applied) is not allowed."""
    at = rules.template_path
    main = rules.container
    spec = merged.get("spec") or {}
    meta = merged.get("metadata") or {}
    gen_meta = generated["metadata"]
    for field in ("name", "namespace", "generateName", "ownerReferences"):
        if field in (template.get("metadata") or {}):
            yield f"{at}.metadata.{field}: is set by the operator; remove it"
    labels = meta.get("labels") or {}
    for key, value in gen_meta["labels"].items():
        if labels.get(key) != value:
            yield f"{at}.metadata.labels.{key}: is set by the operator; remove it"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            yield f"{at}.spec.{field}: sharing the node's namespaces is not allowed"
    if rules.restart_policy is not None and spec.get("restartPolicy") != rules.restart_policy:
        yield (
            f"{at}.spec.restartPolicy: must stay {rules.restart_policy}"
            + (f": {rules.restart_policy_hint}" if rules.restart_policy_hint else "")
        )
    pod_security_context = spec.get("securityContext") or {}
    if pod_security_context.get("runAsUser") == 0:
        yield f"{at}.spec.securityContext.runAsUser: running as root (0) is not allowed"
    found = None
    for where, container in _containers(spec):
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            yield f"{at}.{where}.securityContext.privileged: privileged containers are not allowed"
        if security.get("runAsUser") == 0:
            yield f"{at}.{where}.securityContext.runAsUser: running as root (0) is not allowed"
        if container.get("name") == main and where.startswith("spec.containers"):
            found = container
    for volume in spec.get("volumes") or []:
        if isinstance(volume, Mapping) and "hostPath" in volume:
            yield (
                f"{at}.spec.volumes[{volume.get('name')}].hostPath: node directories are not "
                "allowed; use a PersistentVolumeClaim"
            )
    generated_main = next(c for c in generated["spec"]["containers"] if c.get("name") == main)
    if found is None:
        yield f"{at}.spec.containers[{main}]: the {main} container must not be removed"
        return
    for field in ("command", "args"):
        if found.get(field) != generated_main.get(field):
            yield (
                f"{at}.spec.containers[{main}].{field}: the {main}'s command is set "
                "by the operator; remove it"
            )
    for item in found.get("env") or []:
        # The user's own env list is in the generated container already (checked apart).
        if (
            isinstance(item, Mapping)
            and item.get("name") in rules.reserved_env
            and item not in generated_main["env"]
        ):
            yield (
                f"{at}.spec.containers[{main}].env[{item.get('name')}]: "
                "is set by the operator; remove it"
            )
