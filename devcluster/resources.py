"""The resource types devcluster serves, and what each kind does on create and update.

A `ResourceType` is one resource in one served API version (`pods` in `v1`,
`lmtrainingjobs` in `elasticlm.io/v1alpha1`). Several versions of a custom resource
share their storage, as they do in Kubernetes (conversion strategy `None`: only
`apiVersion` changes), and `events.k8s.io/v1` events are a view of the core `v1`
events with the fields renamed, as in Kubernetes.

A `Strategy` holds a kind's defaulting and validation, like the registry strategies
of the Kubernetes API server: pods are bound to the node and get the API defaults,
services get a cluster IP from a loopback range, claims are bound at once, custom
resources are admitted through their CRD's schema, and CRDs are checked for
structural schemas.
"""

from __future__ import annotations

import abc
import base64
import binascii
import copy
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devcluster.gofmt import go_value
from devcluster.podspec import qos_class
from devcluster.store import (
    APIError,
    GroupResource,
    Obj,
    Store,
    bad_request,
    rfc3339,
    rfc3339_micro,
)
from devcluster.values import as_dict, as_list

CORE_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")

#: Group names of the built-in API groups, in discovery order.
BUILTIN_GROUPS = (
    "",
    "events.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "apiextensions.k8s.io",
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

# --------------------------------------------------------------------------- names

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. "
    "'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_1123_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or "
    "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
    "with an alphabetic character, and end with an alphanumeric character (e.g. "
    "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', "
    "'_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  "
    "or 'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
    "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
    "'[-._a-zA-Z0-9]+')"
)


# --------------------------------------------------------------------------- field errors


@dataclass(frozen=True)
class Cause:
    """One field error of an Invalid status (`field.Error` in Kubernetes)."""

    field: str
    reason: str
    body: str

    def text(self) -> str:
        return f"{self.field}: {self.body}" if self.field else self.body

    def status_cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.body, "field": self.field}


def required(path: str, detail: str = "") -> Cause:
    return Cause(path, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def invalid(path: str, value: Any, detail: str = "") -> Cause:
    body = f"Invalid value: {go_value(value)}" + (f": {detail}" if detail else "")
    return Cause(path, "FieldValueInvalid", body)


def forbidden(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"Forbidden: {detail}")


def unsupported(path: str, value: Any, supported: Iterable[str]) -> Cause:
    options = ", ".join(json.dumps(s) for s in supported)
    return Cause(
        path,
        "FieldValueNotSupported",
        f"Unsupported value: {go_value(value)}: supported values: {options}",
    )


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueDuplicate", f"Duplicate value: {go_value(value)}")


def not_found_cause(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueNotFound", f"Not found: {go_value(value)}")


def too_long(path: str, limit: int) -> Cause:
    return Cause(path, "FieldValueTooLong", f"Too long: may not be more than {limit} bytes")


def check_name(path: str, name: str, kind: str = "subdomain") -> list[Cause]:
    if kind == "label":
        pattern, message, limit = DNS1123_LABEL, LABEL_1123_MSG, 63
    elif kind == "dns1035":
        pattern, message, limit = DNS1035_LABEL, LABEL_1035_MSG, 63
    elif kind == "segment":
        if name in (".", "..") or "/" in name or "%" in name:
            return [invalid(path, name, "may not contain '/' or '%' or be '.' or '..'")]
        return []
    else:
        pattern, message, limit = DNS1123_SUBDOMAIN, SUBDOMAIN_MSG, 253
    causes = []
    if len(name) > limit:
        causes.append(invalid(path, name, f"must be no more than {limit} characters"))
    if not pattern.match(name):
        causes.append(invalid(path, name, message))
    return causes


def check_qualified_name(path: str, key: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    causes = []
    if "/" in key and not prefix:
        causes.append(invalid(path, key, "prefix part must be non-empty"))
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        causes.append(invalid(path, key, "prefix part " + SUBDOMAIN_MSG))
    if not name:
        causes.append(invalid(path, key, "name part must be non-empty"))
    elif len(name) > 63:
        causes.append(invalid(path, key, "name part must be no more than 63 characters"))
    elif not LABEL_NAME.match(name):
        causes.append(invalid(path, key, QUALIFIED_NAME_MSG))
    return causes


def check_labels(labels: dict[str, str], path: str = "metadata.labels") -> list[Cause]:
    causes = []
    for key, value in labels.items():
        causes += check_qualified_name(path, key)
        if len(value) > 63:
            causes.append(invalid(f"{path}", value, "must be no more than 63 characters"))
        elif value and not LABEL_NAME.match(value):
            causes.append(invalid(f"{path}", value, LABEL_VALUE_MSG))
    return causes


# --------------------------------------------------------------------------- types


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


# --------------------------------------------------------------------------- strategies


@dataclass
class Env:
    """What a strategy may consult: the store, settings, and where warnings go."""

    store: Store
    registry: Registry
    node_name: str
    warnings: list[str]
    field_validation: str = "Warn"
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


def _default_container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = str(c.get("image") or "")
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("resources", {})
    for port in as_list(c.get("ports")):
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


#: What `kubectl`/the API let a pod update change: Kubernetes' message, verbatim.
POD_UPDATE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


class PodStrategy(Strategy):
    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("securityContext", {})
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        for key in ("containers", "initContainers"):
            for c in as_list(spec.get(key)):
                if isinstance(c, dict):
                    _default_container(c)
        if not spec.get("nodeName"):
            spec["nodeName"] = env.node_name  # "scheduled" to the one node
        obj["status"] = {
            "phase": "Pending",
            "qosClass": qos_class(obj),
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": rfc3339(),
                }
            ],
        }

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        spec = new.get("spec")
        if isinstance(spec, dict):
            for key in ("containers", "initContainers"):
                for c in as_list(spec.get(key)):
                    if isinstance(c, dict):
                        _default_container(c)

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [required("spec")]
        causes: list[Cause] = []
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            causes.append(required("spec.containers"))
        volumes = {str(as_dict(v).get("name")) for v in as_list(spec.get("volumes"))}
        seen: set[str] = set()
        for key in ("initContainers", "containers"):
            for i, c in enumerate(as_list(spec.get(key))):
                path = f"spec.{key}[{i}]"
                if not isinstance(c, dict):
                    causes.append(invalid(path, c, "must be an object"))
                    continue
                name = c.get("name")
                if not name:
                    causes.append(required(f"{path}.name"))
                elif not isinstance(name, str) or not DNS1123_LABEL.match(name):
                    causes.append(invalid(f"{path}.name", name, LABEL_1123_MSG))
                elif name in seen:
                    causes.append(duplicate(f"{path}.name", name))
                else:
                    seen.add(name)
                if not c.get("image"):
                    causes.append(required(f"{path}.image"))
                for j, port in enumerate(as_list(c.get("ports"))):
                    value = as_dict(port).get("containerPort")
                    if not isinstance(value, int) or not 1 <= value <= 65535:
                        causes.append(
                            invalid(
                                f"{path}.ports[{j}].containerPort",
                                value,
                                "must be between 1 and 65535, inclusive",
                            )
                        )
                for j, mount in enumerate(as_list(c.get("volumeMounts"))):
                    vname = as_dict(mount).get("name")
                    if vname not in volumes:
                        causes.append(not_found_cause(f"{path}.volumeMounts[{j}].name", vname))
        policy = spec.get("restartPolicy")
        if policy not in ("Always", "OnFailure", "Never"):
            causes.append(
                unsupported("spec.restartPolicy", policy, ("Always", "OnFailure", "Never"))
            )
        names: set[str] = set()
        for i, volume in enumerate(as_list(spec.get("volumes"))):
            vname = as_dict(volume).get("name")
            if not vname:
                causes.append(required(f"spec.volumes[{i}].name"))
            elif vname in names:
                causes.append(duplicate(f"spec.volumes[{i}].name", vname))
            names.add(str(vname))
        if old is not None and not causes:
            causes += self._validate_update(spec, as_dict(old.get("spec")))
        return causes

    @staticmethod
    def _validate_update(new: Obj, old: Obj) -> list[Cause]:
        def mutable_stripped(spec: Obj) -> Obj:
            spec = copy.deepcopy(spec)
            for key in ("containers", "initContainers"):
                for c in as_list(spec.get(key)):
                    if isinstance(c, dict):
                        c.pop("image", None)
            spec.pop("activeDeadlineSeconds", None)
            spec.pop("tolerations", None)
            spec.pop("terminationGracePeriodSeconds", None)
            return spec

        if mutable_stripped(new) != mutable_stripped(old):
            return [forbidden("spec", POD_UPDATE_MESSAGE)]
        return []


class ServiceStrategy(Strategy):
    TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")

    @staticmethod
    def _used_ips(env: Env) -> set[str]:
        used = set()
        for svc in env.store.items(("", "services")):
            spec = as_dict(svc.get("spec"))
            for ip in as_list(spec.get("clusterIPs")) or [spec.get("clusterIP")]:
                if isinstance(ip, str):
                    used.add(ip)
        return used

    @staticmethod
    def _used_node_ports(env: Env) -> set[int]:
        used = set()
        for svc in env.store.items(("", "services")):
            for port in as_list(as_dict(svc.get("spec")).get("ports")):
                value = as_dict(port).get("nodePort")
                if isinstance(value, int):
                    used.add(value)
        return used

    def allocate_ip(self, env: Env) -> str:
        used = self._used_ips(env)
        for host in env.service_network.hosts():
            ip = str(host)
            if ip not in used and not ip.endswith(".1"):
                return ip
        raise APIError(500, "InternalError", "no cluster IP left in the service range")

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        self._default_ports(spec)
        if spec["type"] != "ExternalName":
            ip = spec.get("clusterIP") or next(iter(as_list(spec.get("clusterIPs"))), None)
            if not ip:
                ip = self.allocate_ip(env)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
            if ip != "None":
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
            used = self._used_node_ports(env)
            for port in as_list(spec.get("ports")):
                if isinstance(port, dict) and not port.get("nodePort"):
                    free = next(p for p in range(30000, 32768) if p not in used)
                    port["nodePort"] = free
                    used.add(free)
        obj["status"] = {"loadBalancer": {}}

    @staticmethod
    def _default_ports(spec: Obj) -> None:
        for port in as_list(spec.get("ports")):
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "targetPort" not in port and "port" in port:
                    port["targetPort"] = port["port"]

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        spec, old_spec = new.get("spec"), as_dict(old.get("spec"))
        if not isinstance(spec, dict):
            return
        spec.setdefault("type", old_spec.get("type", "ClusterIP"))
        spec.setdefault("sessionAffinity", "None")
        self._default_ports(spec)
        if spec["type"] != "ExternalName" and old_spec.get("clusterIP"):
            spec.setdefault("clusterIP", old_spec.get("clusterIP"))
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec.get("clusterIP")
            spec.setdefault("clusterIPs", old_spec.get("clusterIPs"))
            for key in ("ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
                if key in old_spec:
                    spec.setdefault(key, old_spec[key])
        old_node_ports = {
            (p.get("port"), p.get("protocol")): p.get("nodePort")
            for p in map(as_dict, as_list(old_spec.get("ports")))
            if p.get("nodePort")
        }
        for port in as_list(spec.get("ports")):
            if isinstance(port, dict) and not port.get("nodePort"):
                kept = old_node_ports.get((port.get("port"), port.get("protocol")))
                if kept and spec["type"] in ("NodePort", "LoadBalancer"):
                    port["nodePort"] = kept

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [required("spec")]
        causes: list[Cause] = []
        kind = spec.get("type", "ClusterIP")
        if kind not in self.TYPES:
            causes.append(unsupported("spec.type", kind, self.TYPES))
        ports = as_list(spec.get("ports"))
        if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
            causes.append(required("spec.ports"))
        names: set[str] = set()
        for i, port in enumerate(ports):
            port = as_dict(port)
            path = f"spec.ports[{i}]"
            name = port.get("name")
            if len(ports) > 1 and not name:
                causes.append(required(f"{path}.name"))
            elif name:
                if name in names:
                    causes.append(duplicate(f"{path}.name", name))
                names.add(str(name))
            number = port.get("port")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                causes.append(
                    invalid(f"{path}.port", number, "must be between 1 and 65535, inclusive")
                )
            protocol = port.get("protocol", "TCP")
            if protocol not in ("TCP", "UDP", "SCTP"):
                causes.append(unsupported(f"{path}.protocol", protocol, ("SCTP", "TCP", "UDP")))
            target = port.get("targetPort")
            if isinstance(target, int) and not 1 <= target <= 65535:
                causes.append(
                    invalid(f"{path}.targetPort", target, "must be between 1 and 65535, inclusive")
                )
        ip = spec.get("clusterIP")
        if kind != "ExternalName" and ip and ip != "None":
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                causes.append(invalid("spec.clusterIPs[0]", ip, "must be a valid IP address"))
            else:
                if old is None:
                    others = [
                        s
                        for s in env.store.items(("", "services"))
                        if as_dict(s.get("spec")).get("clusterIP") == ip
                    ]
                    if others:
                        causes.append(
                            invalid(
                                "spec.clusterIPs",
                                [ip],
                                f"failed to allocate IP {ip}: provided IP is already allocated",
                            )
                        )
        if old is not None:
            old_ip = as_dict(old.get("spec")).get("clusterIP")
            if old_ip and ip and ip != old_ip and kind != "ExternalName":
                causes.append(invalid("spec.clusterIPs[0]", [ip], "may not change once set"))
        return causes


class NamespaceStrategy(Strategy):
    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        new["spec"] = old.get("spec", {"finalizers": ["kubernetes"]})
        labels = new["metadata"].setdefault("labels", {})
        if isinstance(labels, dict):
            labels["kubernetes.io/metadata.name"] = new["metadata"]["name"]


class ClaimStrategy(Strategy):
    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        spec.setdefault("volumeMode", "Filesystem")
        spec.setdefault("storageClassName", "standard")
        spec.setdefault("volumeName", f"pvc-{obj['metadata']['uid']}")
        m = obj["metadata"]
        annotations = m.setdefault("annotations", {})
        annotations.setdefault("pv.kubernetes.io/bind-completed", "yes")
        annotations.setdefault("pv.kubernetes.io/bound-by-controller", "yes")
        finalizers = m.setdefault("finalizers", [])
        if "kubernetes.io/pvc-protection" not in finalizers:
            finalizers.append("kubernetes.io/pvc-protection")
        requests = as_dict(as_dict(spec.get("resources")).get("requests"))
        obj["status"] = {
            "phase": "Bound",
            "accessModes": list(as_list(spec.get("accessModes"))),
            "capacity": {"storage": requests.get("storage", "0")},
        }

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes = []
        modes = as_list(spec.get("accessModes"))
        if not modes:
            causes.append(required("spec.accessModes", "at least 1 access mode is required"))
        supported = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
        for mode in modes:
            if mode not in supported:
                causes.append(unsupported("spec.accessModes", mode, supported))
        requests = as_dict(as_dict(spec.get("resources")).get("requests"))
        if "storage" not in requests:
            causes.append(required("spec.resources[storage]"))
        if old is not None and not causes:
            strip = ("resources", "volumeAttributesClassName")
            a = {k: v for k, v in spec.items() if k not in strip}
            b = {k: v for k, v in as_dict(old.get("spec")).items() if k not in strip}
            if a != b:
                causes.append(
                    forbidden(
                        "spec",
                        "spec is immutable after creation except resources.requests and "
                        "volumeAttributesClassName for bound claims",
                    )
                )
        return causes


def _check_config_data(obj: Obj, keys: Iterable[str], causes: list[Cause]) -> None:
    for key in keys:
        for data_key in as_dict(obj.get(key)):
            if len(data_key) > 253 or not CONFIG_KEY.match(data_key):
                causes.append(invalid(f"{key}[{data_key}]", data_key, CONFIG_KEY_MSG))


def _immutable_data(obj: Obj, old: Obj | None, keys: Iterable[str]) -> list[Cause]:
    if old is None or not old.get("immutable"):
        return []
    causes = []
    for key in keys:
        if obj.get(key) != old.get(key):
            causes.append(forbidden(key, "field is immutable when `immutable` is set"))
    if not obj.get("immutable"):
        causes.append(forbidden("immutable", "field is immutable when `immutable` is set"))
    return causes


class ConfigMapStrategy(Strategy):
    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        causes: list[Cause] = []
        for key, value in as_dict(obj.get("data")).items():
            if not isinstance(value, str):
                raise bad_request(
                    f'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: '
                    f"cannot unmarshal {type(value).__name__} into Go struct field "
                    f"ConfigMap.data of type string (key {key!r})"
                )
        for key, value in as_dict(obj.get("binaryData")).items():
            if not _is_base64(value):
                raise bad_request(
                    f'ConfigMap in version "v1" cannot be handled as a ConfigMap: illegal '
                    f"base64 data in binaryData[{key}]"
                )
        _check_config_data(obj, ("data", "binaryData"), causes)
        return causes + _immutable_data(obj, old, ("data", "binaryData"))


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class SecretStrategy(Strategy):
    def _fold(self, obj: Obj) -> None:
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict) and string_data:
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        obj.setdefault("type", "Opaque")

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        self._fold(obj)

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        self._fold(new)
        if "type" not in new and "type" in old:
            new["type"] = old["type"]

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        for key, value in as_dict(obj.get("data")).items():
            if not _is_base64(value):
                raise bad_request(
                    'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                    f"in data[{key}]"
                )
        causes: list[Cause] = []
        _check_config_data(obj, ("data",), causes)
        if old is not None and old.get("type") != obj.get("type"):
            causes.append(invalid("type", obj.get("type"), "field is immutable"))
        return causes + _immutable_data(obj, old, ("data",))


class EventStrategy(Strategy):
    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        involved = as_dict(obj.get("involvedObject"))
        ns = obj["metadata"].get("namespace")
        other = involved.get("namespace")
        if other and ns and other != ns and ns != "default":
            return [invalid("involvedObject.namespace", other, "does not match event.namespace")]
        return []


# ---- custom resources


class CustomResourceStrategy(Strategy):
    """Admission of custom resources through their CRD schema (devcluster.schema.admission)."""

    def _admit(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        from devcluster.schema import admission

        if rt.schema is None:
            return []
        strict = env.field_validation == "Strict"
        result = admission.admit(rt.schema, obj, old, strict=strict)
        if result.strict_decoding_error is not None:
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"{result.strict_decoding_error}"
            )
        unknown = {f'unknown field "{path}"' for path in result.unknown_fields}
        for warning in result.warnings:
            if warning not in unknown or env.field_validation == "Warn":
                env.warnings.append(warning)
        admitted = result.obj
        if admitted is not obj:
            obj.clear()
            obj.update(copy.deepcopy(admitted))
        return [
            from_field_error(e)
            for e in result.errors
            if not (strict and e.reason == "FieldValueForbidden" and e.message in unknown)
        ]

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        pass

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        return self._admit(env, rt, obj, old)

    def validate_status(self, env: Env, rt: ResourceType, obj: Obj, old: Obj) -> list[Cause]:
        return self._admit(env, rt, obj, old)


FIELD_REASONS = {
    "Required": "FieldValueRequired",
    "Invalid": "FieldValueInvalid",
    "NotSupported": "FieldValueNotSupported",
    "Unsupported": "FieldValueNotSupported",
    "Forbidden": "FieldValueForbidden",
    "Duplicate": "FieldValueDuplicate",
    "TooLong": "FieldValueTooLong",
    "TooMany": "FieldValueTooMany",
    "NotFound": "FieldValueNotFound",
    "TypeInvalid": "FieldValueTypeInvalid",
}


def from_field_error(error: Any) -> Cause:
    """A `devcluster.schema.FieldError` as a Status cause."""
    path = str(getattr(error, "field", "") or "")
    reason = str(getattr(error, "reason", "") or "FieldValueInvalid")
    reason = FIELD_REASONS.get(reason, reason)
    if not reason.startswith("FieldValue"):
        reason = "FieldValueInvalid"
    if hasattr(error, "body"):
        return Cause(path, reason, str(error.body()))
    text = str(error.describe()) if hasattr(error, "describe") else str(error)
    body = text[len(path) + 2 :] if path and text.startswith(path + ": ") else text
    return Cause(path, reason, body)


# ---- CustomResourceDefinitions


CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
CRD_RESERVED_GROUPS = frozenset(BUILTIN_GROUPS)


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering: GA > beta > alpha, then by numbers (higher first)."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)  # non-Kubernetes versions sort last
    major = int(match.group(1))
    stage = {"alpha": 2, "beta": 1, None: 0}[match.group(2)]
    minor = int(match.group(3) or 0)
    return (stage, -major, -minor)


class CRDStrategy(Strategy):
    def _default(self, obj: Obj) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        names = spec.get("names")
        if isinstance(names, dict):
            if names.get("kind"):
                names.setdefault("listKind", f"{names['kind']}List")
            if names.get("kind") and not names.get("singular"):
                names["singular"] = str(names["kind"]).lower()
        spec.setdefault("conversion", {"strategy": "None"})
        for version in as_list(spec.get("versions")):
            if isinstance(version, dict):
                version.setdefault("served", True)

    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        self._default(obj)
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if CRD_CLEANUP_FINALIZER not in finalizers:
            finalizers.append(CRD_CLEANUP_FINALIZER)
        obj["status"] = crd_status(obj, None)

    def prepare_update(self, env: Env, rt: ResourceType, new: Obj, old: Obj) -> None:
        self._default(new)
        new["status"] = crd_status(new, old)

    def validate(self, env: Env, rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
        return validate_crd(env, obj, old)


def crd_status(crd: Obj, old: Obj | None) -> Obj:
    spec = as_dict(crd.get("spec"))
    now = rfc3339()
    old_status = as_dict((old or {}).get("status"))
    old_conditions = {c.get("type"): c for c in map(as_dict, as_list(old_status.get("conditions")))}

    def condition(kind: str, reason: str, message: str) -> Obj:
        previous = old_conditions.get(kind)
        if previous and previous.get("status") == "True":
            return previous
        return {
            "type": kind,
            "status": "True",
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }

    stored = list(as_list(old_status.get("storedVersions")))
    for version in as_list(spec.get("versions")):
        if (
            isinstance(version, dict)
            and version.get("storage")
            and version.get("name") not in stored
        ):
            stored.append(version.get("name"))
    conditions = [
        condition("NamesAccepted", "NoConflicts", "no conflicts found"),
        condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ]
    if crd.get("metadata", {}).get("deletionTimestamp"):
        conditions.append(
            {
                "type": "Terminating",
                "status": "True",
                "lastTransitionTime": now,
                "reason": "InstanceDeletionInProgress",
                "message": "CustomResource deletion is in progress",
            }
        )
    return {
        "conditions": conditions,
        "acceptedNames": copy.deepcopy(as_dict(spec.get("names"))),
        "storedVersions": stored,
    }


def validate_crd(env: Env, obj: Obj, old: Obj | None) -> list[Cause]:
    from devcluster.schema import structural

    causes: list[Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    group = spec.get("group")
    names = as_dict(spec.get("names"))
    plural, kind = names.get("plural"), names.get("kind")
    name = obj["metadata"].get("name")
    if not group:
        causes.append(required("spec.group"))
    elif not isinstance(group, str) or "." not in group:
        causes.append(invalid("spec.group", group, "should be a domain with at least one dot"))
    elif group in CRD_RESERVED_GROUPS:
        causes.append(invalid("spec.group", group, "group is reserved for built-in APIs"))
    if not plural:
        causes.append(required("spec.names.plural"))
    elif not isinstance(plural, str) or not DNS1123_LABEL.match(plural):
        causes.append(invalid("spec.names.plural", plural, LABEL_1123_MSG))
    if not kind:
        causes.append(required("spec.names.kind"))
    singular = names.get("singular")
    if singular and (not isinstance(singular, str) or not DNS1123_LABEL.match(singular)):
        causes.append(invalid("spec.names.singular", singular, LABEL_1123_MSG))
    for i, short in enumerate(as_list(names.get("shortNames"))):
        if not isinstance(short, str) or not DNS1123_LABEL.match(short):
            causes.append(invalid(f"spec.names.shortNames[{i}]", short, LABEL_1123_MSG))
    if plural and group and name != f"{plural}.{group}":
        causes.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        causes.append(unsupported("spec.scope", scope, ("Cluster", "Namespaced")))
    versions = as_list(spec.get("versions"))
    if not versions:
        causes.append(
            required("spec.versions", "must have exactly one version marked as storage version")
        )
    storage = [v for v in versions if as_dict(v).get("storage")]
    if versions and len(storage) != 1:
        causes.append(
            invalid(
                "spec.versions",
                [str(as_dict(v).get("name")) for v in storage],
                "must have exactly one version marked as storage version",
            )
        )
    seen: set[str] = set()
    for i, version in enumerate(versions):
        version = as_dict(version)
        path = f"spec.versions[{i}]"
        vname = version.get("name")
        if not vname:
            causes.append(required(f"{path}.name"))
        elif not isinstance(vname, str) or not DNS1035_LABEL.match(vname):
            causes.append(invalid(f"{path}.name", vname, LABEL_1035_MSG))
        elif vname in seen:
            causes.append(duplicate(f"{path}.name", vname))
        seen.add(str(vname))
        schema = as_dict(version.get("schema")).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            causes.append(required(f"{path}.schema.openAPIV3Schema", "schemas are required"))
        else:
            for problem in structural.structural_problems(schema):
                causes.append(
                    Cause(
                        f"{path}.schema.openAPIV3Schema",
                        "FieldValueInvalid",
                        f'Invalid value: "object": {problem}',
                    )
                )
        sub = as_dict(version.get("subresources"))
        scale = sub.get("scale")
        if isinstance(scale, dict):
            for key in ("specReplicasPath", "statusReplicasPath"):
                value = scale.get(key)
                if not value:
                    causes.append(required(f"{path}.subresources.scale.{key}"))
                elif not isinstance(value, str) or not value.startswith(
                    ".spec" if key.startswith("spec") else ".status"
                ):
                    prefix = ".spec" if key.startswith("spec") else ".status"
                    causes.append(
                        invalid(
                            f"{path}.subresources.scale.{key}",
                            value,
                            f"should be a json path under {prefix}",
                        )
                    )
    if old is not None:
        old_spec = as_dict(old.get("spec"))
        if old_spec.get("scope") != scope:
            causes.append(invalid("spec.scope", scope, "field is immutable"))
        if old_spec.get("group") != group:
            causes.append(invalid("spec.group", group, "field is immutable"))
    if not causes:
        causes += _crd_name_conflicts(env, obj)
    return causes


def _crd_name_conflicts(env: Env, crd: Obj) -> list[Cause]:
    spec = crd["spec"]
    group, names = spec["group"], spec["names"]
    mine = {names["plural"], *(names.get("shortNames") or [])}
    for other in env.store.items(("apiextensions.k8s.io", "customresourcedefinitions")):
        if other["metadata"]["name"] == crd["metadata"]["name"]:
            continue
        ospec = as_dict(other.get("spec"))
        if ospec.get("group") != group:
            continue
        onames = as_dict(ospec.get("names"))
        if onames.get("kind") == names["kind"]:
            return [invalid("spec.names.kind", names["kind"], "is already in use")]
        if mine & {onames.get("plural"), *(onames.get("shortNames") or [])}:
            return [invalid("spec.names.plural", names["plural"], "is already in use")]
    return []


# --------------------------------------------------------------------------- times

_CONDITIONS = ("status", "conditions", "[]")
_STATE_TIMES = [
    (*prefix, state, kind, key)
    for prefix in (
        ("status", "containerStatuses", "[]"),
        ("status", "initContainerStatuses", "[]"),
        ("status", "ephemeralContainerStatuses", "[]"),
    )
    for state in ("state", "lastState")
    for kind, key in (
        ("running", "startedAt"),
        ("terminated", "startedAt"),
        ("terminated", "finishedAt"),
    )
]
#: The metav1.Time (seconds) and metav1.MicroTime fields of the built-in kinds, which
#: Kubernetes re-serializes in its own format whatever a client sent.
TIME_FIELDS: dict[tuple[str, str], list[tuple[str, ...]]] = {
    ("", "pods"): [
        ("status", "startTime"),
        (*_CONDITIONS, "lastProbeTime"),
        (*_CONDITIONS, "lastTransitionTime"),
        *_STATE_TIMES,
    ],
    ("", "nodes"): [(*_CONDITIONS, "lastHeartbeatTime"), (*_CONDITIONS, "lastTransitionTime")],
    ("", "namespaces"): [(*_CONDITIONS, "lastTransitionTime")],
    ("", "services"): [(*_CONDITIONS, "lastTransitionTime")],
    ("", "persistentvolumeclaims"): [
        (*_CONDITIONS, "lastProbeTime"),
        (*_CONDITIONS, "lastTransitionTime"),
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [(*_CONDITIONS, "lastTransitionTime")],
    ("", "events"): [("firstTimestamp",), ("lastTimestamp",)],
    ("events.k8s.io", "events"): [("deprecatedFirstTimestamp",), ("deprecatedLastTimestamp",)],
}
MICRO_TIME_FIELDS: dict[tuple[str, str], list[tuple[str, ...]]] = {
    ("", "events"): [("eventTime",), ("series", "lastObservedTime")],
    ("events.k8s.io", "events"): [("eventTime",), ("series", "lastObservedTime")],
    ("coordination.k8s.io", "leases"): [("spec", "acquireTime"), ("spec", "renewTime")],
}
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _format_time(path: str, value: Any, micro: bool) -> Any:
    if value is None:
        return None
    moment = None
    if isinstance(value, str):
        text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise bad_request(f"{path}: parsing time {json.dumps(value)}: not an RFC 3339 time")
    moment = moment.astimezone(UTC)
    return rfc3339_micro(moment) if micro else rfc3339(moment)


def _normalize_path(obj: Any, path: tuple[str, ...], done: str, micro: bool) -> None:
    if not path or not isinstance(obj, dict | list):
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                _normalize_path(item, rest, f"{done}[{i}]", micro)
        return
    if not isinstance(obj, dict) or head not in obj:
        return
    where = f"{done}.{head}" if done else head
    if rest:
        _normalize_path(obj[head], rest, where, micro)
    else:
        obj[head] = _format_time(where, obj[head], micro)


def normalize_times(rt: ResourceType, obj: Obj) -> None:
    """Rewrite the time fields of a built-in kind as Kubernetes serializes them."""
    key = (rt.group, rt.plural)
    for path in TIME_FIELDS.get(key, []):
        _normalize_path(obj, path, "", micro=False)
    for path in MICRO_TIME_FIELDS.get(key, []):
        _normalize_path(obj, path, "", micro=True)


# --------------------------------------------------------------------------- registry

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
            "coordination.k8s.io", "v1", "leases", "lease", "Lease", True,
            top_fields=_top("spec"),
        ),
        ResourceType(
            "discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True,
            field_selectors=("addressType",),
            top_fields=_top("addressType", "endpoints", "ports"),
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


# --------------------------------------------------------------------------- helpers


def json_path_get(obj: Any, path: str) -> tuple[bool, Any]:
    """Follow a simple JSONPath (`.a.b`, `.a[0].b`, `{.a.b}`); (found, value)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    tokens = re.findall(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]", path)
    current = obj
    for name, index, quoted in tokens:
        key = name or quoted
        if key:
            if not isinstance(current, dict) or key not in current:
                return False, None
            current = current[key]
        else:
            i = int(index)
            if not isinstance(current, list) or i >= len(current):
                return False, None
            current = current[i]
    return True, current


def json_path_set(obj: Obj, path: str, value: Any) -> None:
    """Set `.a.b` (creating maps on the way)."""
    parts = [p for p in path.strip().lstrip(".").split(".") if p]
    current = obj
    for part in parts[:-1]:
        nxt = current.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            current[part] = nxt
        current = nxt
    current[parts[-1]] = value


def json_path_field(path: str) -> str:
    """`.spec.replicas` -> `spec.replicas` (for error fields)."""
    return path.strip().lstrip(".")
