"""Resource types: `ResourceType` (one resource in one served API version), the
converters between served versions and storage, and `Strategy`, the base of the
per-kind defaulting and validation, with the `Env` it consults.
"""

from __future__ import annotations

import abc
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devcluster.resources.fields import Cause
from devcluster.store import APIError, GroupResource, Obj, Store

if TYPE_CHECKING:
    from devcluster.resources.registry import Registry


CORE_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")

#: Group names of the built-in API groups, in discovery order.
BUILTIN_GROUPS = (
    "",
    "apps",
    "events.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "apiextensions.k8s.io",
    "rbac.authorization.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
)

#: Namespaces that Kubernetes refuses to delete.
IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

METADATA_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


@dataclass(frozen=True)
class ScaleSpec:
    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str | None


@dataclass
class ResourceType:
    """One resource in one served API version."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = CORE_VERBS
    status: bool = False
    scale: ScaleSpec | None = None
    log: bool = False
    storage: GroupResource | None = None
    crd: str | None = None
    schema: Obj | None = None
    printer_columns: list[Obj] = field(default_factory=list)
    field_selectors: tuple[str, ...] = ()
    #: Fields a stored object may have at the top level (built-in kinds only).
    top_fields: frozenset[str] | None = None
    storage_version: bool = True
    #: The deletion response is the object itself rather than a Status.
    return_deleted: bool = False
    #: Create-only reviews that are answered, never stored (SelfSubjectAccessReview).
    virtual: bool = False
    strategy: Strategy | None = None
    converter: Converter | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def gr(self) -> GroupResource:
        return self.storage or (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """`pods`, `lmtrainingjobs.elasticlm.io`: how errors name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def is_custom(self) -> bool:
        return self.crd is not None

    def supported_field_selectors(self) -> tuple[str, ...]:
        return ("metadata.name", "metadata.namespace", *self.field_selectors)

    def present(self, obj: Obj) -> Obj:
        """The stored object as this version serves it."""
        if self.converter is not None:
            return self.converter.present(obj)
        if obj.get("apiVersion") == self.api_version and obj.get("kind") == self.kind:
            return obj
        result = dict(obj)
        result["apiVersion"] = self.api_version
        result["kind"] = self.kind
        return result

    def to_storage(self, obj: Obj, storage_api_version: str) -> Obj:
        if self.converter is not None:
            return self.converter.to_storage(obj)
        result = dict(obj)
        result["apiVersion"] = storage_api_version
        result["kind"] = self.kind
        return result

    # -- errors naming this resource

    def not_found(self, name: str) -> APIError:
        return APIError(
            404,
            "NotFound",
            f'{self.qualified} "{name}" not found',
            {"name": name, "group": self.group, "kind": self.plural},
        )

    def already_exists(self, name: str) -> APIError:
        return APIError(
            409,
            "AlreadyExists",
            f'{self.qualified} "{name}" already exists',
            {"name": name, "group": self.group, "kind": self.plural},
        )

    def conflict(self, name: str, detail: str | None = None) -> APIError:
        detail = detail or (
            "the object has been modified; please apply your changes to the latest version "
            "and try again"
        )
        return APIError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {self.qualified} "{name}": {detail}',
            {"name": name, "group": self.group, "kind": self.plural},
        )

    def invalid(self, name: str, causes: list[Cause]) -> APIError:
        texts = [c.text() for c in causes]
        summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        return APIError(
            422,
            "Invalid",
            f'{self.qualified_kind} "{name}" is invalid: {summary}',
            {
                "name": name,
                "group": self.group,
                "kind": self.kind,
                "causes": [c.status_cause() for c in causes],
            },
        )

    def forbidden(self, name: str, detail: str) -> APIError:
        return APIError(
            403,
            "Forbidden",
            f'{self.qualified} "{name}" is forbidden: {detail}',
            {"name": name, "group": self.group, "kind": self.plural},
        )


class Converter(abc.ABC):
    """Serves one stored representation under another API version."""

    @abc.abstractmethod
    def present(self, obj: Obj) -> Obj:
        """The stored object as this API version shows it."""

    @abc.abstractmethod
    def to_storage(self, obj: Obj) -> Obj:
        """An object of this API version in the stored representation."""


# core/v1 Event field <-> events.k8s.io/v1 Event field
EVENT_FIELDS = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
)
EVENT_SHARED = ("metadata", "eventTime", "series", "reportingInstance", "action", "reason")
EVENT_SHARED_2 = ("related", "type")


class EventsConverter(Converter):
    """events.k8s.io/v1 Events, stored as core v1 Events."""

    def present(self, obj: Obj) -> Obj:
        result: Obj = {"apiVersion": "events.k8s.io/v1", "kind": "Event"}
        for key in (*EVENT_SHARED, *EVENT_SHARED_2):
            if key in obj:
                result[key] = obj[key]
        for core, new in EVENT_FIELDS:
            if core in obj:
                result[new] = obj[core]
        return result

    def to_storage(self, obj: Obj) -> Obj:
        result: Obj = {"apiVersion": "v1", "kind": "Event"}
        for key in (*EVENT_SHARED, *EVENT_SHARED_2):
            if key in obj:
                result[key] = obj[key]
        for core, new in EVENT_FIELDS:
            if new in obj:
                result[core] = obj[new]
        return result


@dataclass
class Env:
    """What a strategy may consult: the store, settings, and where warnings go."""

    store: Store
    registry: Registry
    node_name: str
    warnings: list[str]
    field_validation: str = "Warn"
    #: Whether the ConfigMap kube-root-ca.crt is published (the cluster serves HTTPS).
    root_ca: bool = False
    service_network: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network("127.96.0.0/16")
    )


class Strategy:
    """Defaulting and validation of one kind; the defaults do nothing."""

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        """Defaults and server-set fields of a new object (already has metadata)."""

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        """Carry over what the server owns; `new` is the whole updated object."""

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        return []

    def validate_status(self, env: Env, rt: ResourceType, obj: Obj, old: Obj) -> list[Cause]:
        """Validation of a status subresource write (the whole resulting object)."""
        return []

    def prepare_status_update(self, env: Env, rt: ResourceType, new: Obj, submitted: Obj) -> None:
        """What a status write keeps of the submitted object besides `status` (nothing);
        `new` is the stored object with the submitted status."""
