"""The registry: the built-in resource types, those a CRD defines, and lookups by
group, version, resource and kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devcluster.resources.apps import DeploymentStrategy, ReplicaSetStrategy
from devcluster.resources.crds import CRDStrategy, CustomResourceStrategy, version_priority
from devcluster.resources.rbac import BindingStrategy, RoleStrategy
from devcluster.resources.strategies import (
    ClaimStrategy,
    ConfigMapStrategy,
    EventStrategy,
    NamespaceStrategy,
    PodStrategy,
    SecretStrategy,
    ServiceStrategy,
)
from devcluster.resources.types import BUILTIN_GROUPS, EventsConverter, ResourceType, ScaleSpec
from devcluster.store import GroupResource, Obj

POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
EVENT_SELECTOR_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "type",
)
NEW_EVENT_SELECTOR_FIELDS = (
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
)


def _top(*names: str) -> frozenset[str]:
    return frozenset({"apiVersion", "kind", "metadata", *names})


def builtin_types() -> list[ResourceType]:
    return [
        ResourceType(
            "", "v1", "namespaces", "namespace", "Namespace", False,
            short_names=("ns",),
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
            status=True, field_selectors=("status.phase",),
            top_fields=_top("spec", "status"), strategy=NamespaceStrategy(),
            return_deleted=True,
        ),
        ResourceType(
            "", "v1", "pods", "pod", "Pod", True, short_names=("po",), categories=("all",),
            status=True, log=True, field_selectors=POD_FIELDS,
            top_fields=_top("spec", "status"), strategy=PodStrategy(), return_deleted=True,
        ),
        ResourceType(
            "", "v1", "services", "service", "Service", True, short_names=("svc",),
            categories=("all",), status=True, field_selectors=("spec.clusterIP", "spec.type"),
            top_fields=_top("spec", "status"), strategy=ServiceStrategy(), return_deleted=True,
        ),
        ResourceType(
            "", "v1", "endpoints", "endpoints", "Endpoints", True, short_names=("ep",),
            top_fields=_top("subsets"),
        ),
        ResourceType(
            "", "v1", "events", "event", "Event", True, short_names=("ev",),
            field_selectors=EVENT_SELECTOR_FIELDS,
            top_fields=_top(
                "involvedObject", "reason", "message", "source", "firstTimestamp",
                "lastTimestamp", "count", "type", "eventTime", "series", "action", "related",
                "reportingComponent", "reportingInstance",
            ),
            strategy=EventStrategy(),
        ),
        ResourceType(
            "", "v1", "configmaps", "configmap", "ConfigMap", True, short_names=("cm",),
            top_fields=_top("data", "binaryData", "immutable"), strategy=ConfigMapStrategy(),
        ),
        ResourceType(
            "", "v1", "secrets", "secret", "Secret", True, field_selectors=("type",),
            top_fields=_top("data", "stringData", "type", "immutable"),
            strategy=SecretStrategy(),
        ),
        ResourceType(
            "", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True,
            short_names=("sa",),
            top_fields=_top("secrets", "imagePullSecrets", "automountServiceAccountToken"),
        ),
        ResourceType(
            "", "v1", "persistentvolumeclaims", "persistentvolumeclaim",
            "PersistentVolumeClaim", True, short_names=("pvc",), status=True,
            top_fields=_top("spec", "status"), strategy=ClaimStrategy(),
        ),
        ResourceType(
            "", "v1", "nodes", "node", "Node", False, short_names=("no",), status=True,
            field_selectors=("spec.unschedulable",), top_fields=_top("spec", "status"),
        ),
        ResourceType(
            "events.k8s.io", "v1", "events", "event", "Event", True, short_names=("ev",),
            storage=("", "events"), converter=EventsConverter(),
            field_selectors=NEW_EVENT_SELECTOR_FIELDS,
            top_fields=_top(
                "regarding", "related", "note", "reason", "type", "eventTime", "series",
                "action", "reportingController", "reportingInstance", "deprecatedSource",
                "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount",
            ),
        ),
        ResourceType(
            "apps", "v1", "deployments", "deployment", "Deployment", True,
            short_names=("deploy",), categories=("all",), status=True,
            scale=ScaleSpec(".spec.replicas", ".status.replicas", ".spec.selector"),
            top_fields=_top("spec", "status"), strategy=DeploymentStrategy(),
        ),
        ResourceType(
            "apps", "v1", "replicasets", "replicaset", "ReplicaSet", True,
            short_names=("rs",), categories=("all",), status=True,
            scale=ScaleSpec(".spec.replicas", ".status.replicas", ".spec.selector"),
            top_fields=_top("spec", "status"), strategy=ReplicaSetStrategy(),
        ),
        ResourceType(
            "coordination.k8s.io", "v1", "leases", "lease", "Lease", True,
            top_fields=_top("spec"),
        ),
        ResourceType(
            "discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True,
            field_selectors=("addressType",),
            top_fields=_top("addressType", "endpoints", "ports"),
        ),
        # Stored, not enforced: devcluster has no eviction API (pods/eviction) to guard.
        ResourceType(
            "policy", "v1", "poddisruptionbudgets", "poddisruptionbudget",
            "PodDisruptionBudget", True, short_names=("pdb",), status=True,
            top_fields=_top("spec", "status"),
        ),
        # Stored, not enforced: devcluster's pods share the host's network, and nothing
        # filters the traffic between them (docs/devcluster.md).
        ResourceType(
            "networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy",
            True, short_names=("netpol",), top_fields=_top("spec"),
        ),
        ResourceType(
            "rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True,
            top_fields=_top("rules"), strategy=RoleStrategy(),
        ),
        ResourceType(
            "rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole",
            False, top_fields=_top("rules", "aggregationRule"), strategy=RoleStrategy(),
        ),
        ResourceType(
            "rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding",
            True, top_fields=_top("roleRef", "subjects"), strategy=BindingStrategy(),
        ),
        ResourceType(
            "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding",
            "ClusterRoleBinding", False, top_fields=_top("roleRef", "subjects"),
            strategy=BindingStrategy(),
        ),
        ResourceType(
            "authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview",
            "SelfSubjectReview", False, verbs=("create",), virtual=True,
        ),
        ResourceType(
            "authorization.k8s.io", "v1", "selfsubjectaccessreviews",
            "selfsubjectaccessreview", "SelfSubjectAccessReview", False, verbs=("create",),
            virtual=True,
        ),
        ResourceType(
            "authorization.k8s.io", "v1", "selfsubjectrulesreviews",
            "selfsubjectrulesreview", "SelfSubjectRulesReview", False, verbs=("create",),
            virtual=True,
        ),
        ResourceType(
            "apiextensions.k8s.io", "v1", "customresourcedefinitions",
            "customresourcedefinition", "CustomResourceDefinition", False,
            short_names=("crd", "crds"), categories=("api-extensions",), status=True,
            top_fields=_top("spec", "status"), strategy=CRDStrategy(), return_deleted=True,
        ),
    ]  # fmt: skip


def crd_resource_types(crd: Obj) -> list[ResourceType]:
    """The served versions of a CRD as resource types."""
    spec = crd["spec"]
    names = spec["names"]
    kind = names["kind"]
    result = []
    strategy = CustomResourceStrategy()
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        sub = version.get("subresources") or {}
        scale = sub.get("scale")
        result.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular") or kind.lower(),
                kind=kind,
                namespaced=spec.get("scope") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status="status" in sub,
                scale=ScaleSpec(
                    scale["specReplicasPath"],
                    scale["statusReplicasPath"],
                    scale.get("labelSelectorPath"),
                )
                if isinstance(scale, dict)
                else None,
                crd=crd["metadata"]["name"],
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=list(version.get("additionalPrinterColumns") or []),
                field_selectors=tuple(
                    f["jsonPath"].lstrip(".")
                    for f in version.get("selectableFields") or []
                    if isinstance(f, dict) and f.get("jsonPath")
                ),
                storage_version=bool(version.get("storage")),
                return_deleted=True,
                strategy=strategy,
            )
        )
    return result


class Registry:
    """The resource types served right now, by group, version and plural."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crds: dict[str, list[tuple[str, str, str]]] = {}
        self.listeners: list[Callable[[], None]] = []
        #: Derived documents (OpenAPI) of the current set of types; emptied on changes.
        self.cache: dict[Any, Any] = {}
        for rt in builtin_types():
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> list[str]:
        seen: list[str] = []
        for group in BUILTIN_GROUPS:
            if any(k[0] == group for k in self._types):
                seen.append(group)
        for group in sorted({k[0] for k in self._types} - set(BUILTIN_GROUPS)):
            seen.append(group)
        return seen

    def versions(self, group: str) -> list[str]:
        """Served versions of a group, the preferred one first."""
        return sorted({k[1] for k in self._types if k[0] == group}, key=version_priority)

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return sorted(
            (rt for k, rt in self._types.items() if k[0] == group and k[1] == version),
            key=lambda rt: rt.plural,
        )

    def storage_type(self, gr: GroupResource) -> ResourceType | None:
        """The type that owns the storage of `gr` (its storage version)."""
        candidates = [rt for rt in self._types.values() if rt.gr == gr and rt.storage is None]
        for rt in candidates:
            if rt.storage_version:
                return rt
        return candidates[0] if candidates else None

    def storage_api_version(self, gr: GroupResource) -> str:
        rt = self.storage_type(gr)
        return rt.api_version if rt is not None else ""

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def register_crd(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        self._drop_crd(name)
        keys = []
        for rt in crd_resource_types(crd):
            self.add(rt)
            keys.append((rt.group, rt.version, rt.plural))
        self._crds[name] = keys
        self._changed()

    def unregister_crd(self, name: str) -> None:
        self._drop_crd(name)
        self._changed()

    def _drop_crd(self, name: str) -> None:
        for key in self._crds.pop(name, []):
            self._types.pop(key, None)

    def crd_types(self, name: str) -> list[ResourceType]:
        return [self._types[k] for k in self._crds.get(name, []) if k in self._types]

    def _changed(self) -> None:
        self.cache.clear()
        for listener in self.listeners:
            listener()
