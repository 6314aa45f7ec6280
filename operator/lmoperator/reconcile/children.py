"""What every kind's reconciler shares: owners, observed children, actions, plans.

Pure: no API calls, no clock (a pass receives `now`). A kind's reconciler (e.g.
`reconcile/trainingjob.py`) reads `Observed*` facts made from the children that exist
and returns a `Plan`: generic actions on children of any kind, the owner's new status
and the events to post. `handlers/common.py` carries a plan out through `kube.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lmoperator.api import kinds
from lmoperator.builders.pods import INDEX_LABEL, PROMOTED_ANNOTATION, ROLE_LABEL

MAX_MESSAGE = 1024


# --------------------------------------------------------------------------------------
# The owner


@dataclass(frozen=True)
class OwnerRef:
    """Who the owner is, known even when its spec does not parse."""

    kind: kinds.ResourceKind
    name: str
    namespace: str
    uid: str
    generation: int = 0

    def involved_object(self) -> dict[str, str]:
        """The owner as an Event's involvedObject."""
        return {
            "apiVersion": self.kind.api_version,
            "kind": self.kind.kind,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }


def controller_of(child: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(apiVersion, kind, name) of the child's controller owner reference, or None."""
    for ref in (child.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return str(ref.get("apiVersion")), str(ref.get("kind")), str(ref.get("name"))
    return None


def is_controlled_by(child: Mapping[str, Any], uid: str) -> bool:
    """Whether `uid` is the child's controller: the operator never touches what it does
    not own, even when the names and labels match."""
    return any(
        isinstance(ref, Mapping) and ref.get("uid") == uid and ref.get("controller")
        for ref in (child.get("metadata") or {}).get("ownerReferences") or []
    )


def owned(children: Iterable[Mapping[str, Any]], uid: str) -> list[Mapping[str, Any]]:
    return [c for c in children if is_controlled_by(c, uid)]


# --------------------------------------------------------------------------------------
# Observed children


@dataclass(frozen=True)
class ObservedPod:
    name: str
    uid: str
    role: str
    index: int | None
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    ready: bool = False
    deleting: bool = False
    exit_code: int | None = None
    termination_message: str | None = None
    restart_count: int = 0
    ip: str | None = None
    # A worker that was a warm spare (the PROMOTED_ANNOTATION is set).
    promoted: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class ObservedService:
    name: str
    cluster_ip: str | None


@dataclass(frozen=True)
class ObservedObject:
    """Any other child (a Deployment, Secret, NetworkPolicy, one of our kinds): the facts
    a reconciler compares with what it wants."""

    kind: str
    name: str
    uid: str
    role: str
    deleting: bool = False
    generation: int = 0
    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    conditions: Mapping[str, str] = field(default_factory=dict)  # type -> status
    spec: Mapping[str, Any] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)


def _ready(status: Mapping[str, Any]) -> bool:
    return any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def observe_pod(pod: Mapping[str, Any], container: str) -> ObservedPod:
    """The facts a reconciler needs from a pod, reading the state of `container`."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    try:
        index: int | None = int(labels[INDEX_LABEL])
    except (KeyError, TypeError, ValueError):
        index = None
    statuses = [s for s in status.get("containerStatuses") or [] if isinstance(s, Mapping)]
    main = next((s for s in statuses if s.get("name") == container), None)
    main = main or (statuses[0] if statuses else {})
    terminated = (main.get("state") or {}).get("terminated") or {}
    exit_code = terminated.get("exitCode")
    return ObservedPod(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        role=str(labels.get(ROLE_LABEL, "")),
        index=index,
        phase=str(status.get("phase") or "Pending"),
        ready=_ready(status),
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        termination_message=terminated.get("message"),
        restart_count=int(main.get("restartCount") or 0),
        ip=status.get("podIP") or None,
        promoted=PROMOTED_ANNOTATION in (meta.get("annotations") or {}),
    )


def observe_service(service: Mapping[str, Any]) -> ObservedService:
    ip = (service.get("spec") or {}).get("clusterIP")
    return ObservedService(
        name=str((service.get("metadata") or {}).get("name", "")),
        cluster_ip=ip if ip and ip != "None" else None,
    )


def observe_object(obj: Mapping[str, Any]) -> ObservedObject:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas") if isinstance(spec, Mapping) else None
    observed_generation = status.get("observedGeneration")
    ready_replicas = status.get("readyReplicas")
    return ObservedObject(
        kind=str(obj.get("kind", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        role=str((meta.get("labels") or {}).get(ROLE_LABEL, "")),
        deleting=bool(meta.get("deletionTimestamp")),
        generation=int(meta.get("generation") or 0),
        observed_generation=observed_generation if isinstance(observed_generation, int) else None,
        replicas=replicas if isinstance(replicas, int) else None,
        ready_replicas=ready_replicas if isinstance(ready_replicas, int) else None,
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        conditions={
            str(c.get("type")): str(c.get("status"))
            for c in status.get("conditions") or []
            if isinstance(c, Mapping)
        },
        spec=dict(spec) if isinstance(spec, Mapping) else {},
        status=dict(status) if isinstance(status, Mapping) else {},
    )


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and new keys,
    nested maps patched key by key, removed keys as null; lists are replaced whole."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif before != value or key not in old:
            patch[key] = value
    patch.update({key: None for key in old if key not in new})
    return patch


# --------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class CreateObject:
    """Create a child (pods, services, Deployments, ... as a full manifest)."""

    kind: kinds.ResourceKind
    # Left out of repr: a Secret's manifest holds its token, which is never logged.
    manifest: dict[str, Any] = field(repr=False)
    role: str

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class PatchObject:
    """A JSON merge patch of a child, or of its `scale` or `status` subresource."""

    kind: kinds.ResourceKind
    name: str
    patch: dict[str, Any]
    role: str
    reason: str
    subresource: Literal["", "scale", "status"] = ""


@dataclass(frozen=True)
class DeleteObject:
    """Delete a child, or the owner itself (e.g. after ttlSecondsAfterFinished)."""

    kind: kinds.ResourceKind
    name: str
    role: str
    reason: str
    # None: the object's own grace period (a training worker saves a checkpoint in it).
    grace_seconds: int | None = None
    uid: str = ""  # the child's uid when known: marks it deleting until the watch shows it


Action = CreateObject | PatchObject | DeleteObject


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


@dataclass(frozen=True)
class SparePromotion:
    """Tell the spare pod at `ip` that it is now the worker of `index`."""

    pod: str
    ip: str
    index: int
    expected: int


@dataclass
class Plan:
    """What one pass decided: actions in order, the owner's new status, the events."""

    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # "up" or "down" when this pass decided a rescale.
    scaled: Literal["up", "down"] | None = None
    # Orders to warm spares, carried out over HTTP after the actions (handlers).
    promotions: list[SparePromotion] = field(default_factory=list)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event(reason, clip(message), "Warning" if warning else "Normal"))

    def delete(
        self,
        kind: kinds.ResourceKind,
        name: str,
        role: str,
        reason: str,
        grace_seconds: int | None = None,
        uid: str = "",
    ) -> None:
        """Delete once per pass, whatever asks for it how many times."""
        if not any(
            isinstance(a, DeleteObject) and a.kind == kind and a.name == name for a in self.actions
        ):
            self.actions.append(DeleteObject(kind, name, role, reason, grace_seconds, uid))


def clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
