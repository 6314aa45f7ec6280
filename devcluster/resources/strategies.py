"""Strategies of the built-in kinds: defaulting and validation of pods, services,
namespaces, claims, ConfigMaps, Secrets and events.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import random
from collections.abc import Iterable
from typing import Any

from devcluster import scheduling
from devcluster.podspec.status import qos_class
from devcluster.resources.fields import (
    CONFIG_KEY,
    CONFIG_KEY_MSG,
    DNS1123_LABEL,
    LABEL_1123_MSG,
    Cause,
    duplicate,
    forbidden,
    invalid,
    not_found_cause,
    required,
    unsupported,
)
from devcluster.resources.serviceaccounts import admit_pod
from devcluster.resources.types import Env, ResourceType, Strategy
from devcluster.store import APIError, Obj, bad_request, rfc3339
from devcluster.values import as_dict, as_list


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


def default_pod_template_spec(spec: Obj) -> None:
    """The API defaults of a pod spec, as a pod template (a Deployment's) gets them."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for key in ("containers", "initContainers"):
        for c in as_list(spec.get(key)):
            if isinstance(c, dict):
                _default_container(c)


def _lacking(env: Env, pod: Obj) -> list[str]:
    """What the node lacks for `pod` (empty: it fits, or there is no Node object). As
    with kube-scheduler, a pod that fits is bound even while a larger one waits."""
    node = env.store.get(("", "nodes"), "", env.node_name)
    if node is None:
        return []
    load = scheduling.node_load(env.store.items(("", "pods")), env.node_name)
    return scheduling.insufficient(pod, scheduling.node_allocatable(node), load)


class PodStrategy(Strategy):
    def prepare_create(self, env: Env, rt: ResourceType, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        default_pod_template_spec(spec)
        # what admission adds to pods, not to templates
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        admit_pod(env, obj)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        condition = scheduling.scheduled_condition(rfc3339())
        if not spec.get("nodeName"):
            # Scheduled to the one node when its requests fit there (devcluster/scheduling.py);
            # otherwise left unbound, Pending, for the scheduling pass to bind later.
            lacking = _lacking(env, obj)
            if lacking:
                message = scheduling.unschedulable_message(lacking)
                condition = scheduling.unschedulable_condition(message, rfc3339())
            else:
                spec["nodeName"] = env.node_name
        obj["status"] = {
            "phase": "Pending",
            "qosClass": qos_class(obj),
            "conditions": [condition],
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

    def __init__(self) -> None:
        # Cluster IPs are handed out round robin from a random place in the range, as
        # pod IPs are: two devclusters on one machine (parallel test runs) would
        # otherwise both give their first Service 127.96.0.2, and a Service made after
        # another was deleted would get its address while clients of the old one
        # (a terminating pod) may still connect to it.
        self._start = random.randrange(1 << 32)

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
        network = env.service_network
        first = int(network.network_address) + 1  # hosts only: no network address
        size = network.num_addresses - 2  # nor the broadcast address
        for i in range(size):
            offset = (self._start + i) % size
            ip = str(ipaddress.IPv4Address(first + offset))
            if ip not in used and not ip.endswith(".1"):
                self._start = offset + 1  # the next one starts after it
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
