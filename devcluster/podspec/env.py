"""A container's environment: $(VAR) expansion, service links, resource quantities,
the downward API, ConfigMaps and Secrets, as the kubelet computes them."""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from devcluster.gofmt import go_quote
from devcluster.podspec.common import JSON, ConfigError

# --------------------------------------------------------------------------------------
# $(VAR) expansion, as k8s.io/kubernetes/third_party/forked/golang/expansion


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """Expand `$(VAR)` references in `text` the way Kubernetes does.

    `$(VAR)` becomes the value of VAR when `mapping` defines it and stays as written when
    it does not; `$$` is an escaped `$` (so `$$(VAR)` yields the literal `$(VAR)`); a
    `$` followed by anything else, or an unclosed `$(`, is kept as is.
    """
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close >= 1:
                    name = rest[1:close]
                    out.append(mapping.get(name, f"$({name})"))
                    advance = close + 1
                else:
                    out.append("$(")
                    advance = 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def valid_env_name(name: str) -> bool:
    """Kubernetes' IsEnvVarName: what envFrom keys must look like to be imported."""
    return bool(_ENV_NAME.match(name))


# --------------------------------------------------------------------------------------
# Service links


def _env_prefix(name: str) -> str:
    return name.upper().replace("-", "_")


def service_env(services: Iterable[JSON]) -> dict[str, str]:
    """The `<NAME>_SERVICE_HOST/PORT` and Docker-link variables of a namespace's services.

    As the kubelet's service links: services without a cluster IP (headless, or not yet
    allocated) are left out; `_SERVICE_PORT` is the first port; every named port also
    gets `_SERVICE_PORT_<PORTNAME>`.
    """
    env: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: str(s.get("metadata", {}).get("name", ""))):
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        name = (svc.get("metadata") or {}).get("name")
        ports = spec.get("ports") or []
        if not name or not ip or ip == "None" or not ports:
            continue
        prefix = _env_prefix(str(name))
        env[f"{prefix}_SERVICE_HOST"] = str(ip)
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port"))
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{_env_prefix(str(port['name']))}"] = str(port["port"])
        # Docker links: <NAME>_PORT=tcp://ip:port and per port/protocol details.
        first = ports[0]
        proto0 = str(first.get("protocol") or "TCP").lower()
        env[f"{prefix}_PORT"] = f"{proto0}://{ip}:{first.get('port')}"
        for port in ports:
            proto = str(port.get("protocol") or "TCP")
            p = f"{prefix}_PORT_{port.get('port')}_{proto.upper()}"
            env[p] = f"{proto.lower()}://{ip}:{port.get('port')}"
            env[f"{p}_PROTO"] = proto.lower()
            env[f"{p}_PORT"] = str(port.get("port"))
            env[f"{p}_ADDR"] = str(ip)
    return env


def kubernetes_service_env(host: str, port: int) -> dict[str, str]:
    """`KUBERNETES_SERVICE_HOST/PORT` (and the link variables) for the API server."""
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


# --------------------------------------------------------------------------------------
# Quantities (for resourceFieldRef)

_SUFFIXES: dict[str, float] = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (`500m` -> 0.5, `1Gi` -> 1073741824)."""
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.match(value.strip())
    if not m or m.group(2) not in _SUFFIXES:
        raise ValueError(f"invalid quantity {value!r}")
    return float(m.group(1)) * _SUFFIXES[m.group(2)]


def node_allocatable() -> dict[str, float]:
    """What this machine offers: CPUs, memory and disk, as resourceFieldRef's default."""
    mem = 0.0
    try:
        mem = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        mem = float(2**34)
    return {
        "cpu": float(os.cpu_count() or 1),
        "memory": mem,
        "ephemeral-storage": float(shutil.disk_usage("/").total),
    }


def resource_field_value(
    containers: Sequence[JSON], ref: JSON, container_name: str, allocatable: Mapping[str, float]
) -> str:
    """A `resourceFieldRef` value: ceil(quantity / divisor) as the downward API does."""
    target = ref.get("containerName") or container_name
    container = next((c for c in containers if c.get("name") == target), None)
    if container is None:
        raise ConfigError(f"resourceFieldRef: no container named {target!r}")
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise ConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    res = container.get("resources") or {}
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    try:
        if kind == "limits":
            raw = limits.get(name)
            value = parse_quantity(raw) if raw is not None else allocatable.get(name, 0.0)
        else:
            raw = requests.get(name, limits.get(name))
            value = parse_quantity(raw) if raw is not None else 0.0
        divisor = parse_quantity(ref.get("divisor") or "1")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if divisor <= 0:
        raise ConfigError(f"invalid divisor {ref.get('divisor')!r}")
    return str(math.ceil(value / divisor - 1e-9))


# --------------------------------------------------------------------------------------
# The downward API

_SUBSCRIPT = re.compile(r"""^(metadata\.(?:labels|annotations))\[['"](.+)['"]\]$""")


def field_value(pod: JSON, field_path: str, pod_ip: str, host_ip: str) -> str:
    """A `fieldRef` value from the pod (with the IPs the kubelet gave it)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    m = _SUBSCRIPT.match(field_path)
    if m:
        mapping = meta.get("labels" if m.group(1).endswith("labels") else "annotations") or {}
        return str(mapping.get(m.group(2), ""))
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "metadata.generateName": meta.get("generateName"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path in simple:
        return "" if simple[field_path] is None else str(simple[field_path])
    if field_path in ("metadata.labels", "metadata.annotations"):
        mapping = meta.get(field_path.split(".")[1]) or {}
        return "\n".join(f"{k}={go_quote(str(v))}" for k, v in sorted(mapping.items()))
    raise ConfigError(f"unsupported fieldRef fieldPath {field_path!r}")


# --------------------------------------------------------------------------------------
# ConfigMaps and Secrets


def object_data(obj: JSON, *, secret: bool) -> dict[str, bytes]:
    """The bytes behind each key of a ConfigMap (data, binaryData) or Secret (data, stringData)."""
    out: dict[str, bytes] = {}
    if secret:
        for k, v in (obj.get("data") or {}).items():
            try:
                out[str(k)] = base64.b64decode(str(v), validate=False)
            except (ValueError, TypeError):
                raise ConfigError(f"secret key {k!r} is not valid base64") from None
        for k, v in (obj.get("stringData") or {}).items():
            out[str(k)] = str(v).encode()
    else:
        for k, v in (obj.get("binaryData") or {}).items():
            try:
                out[str(k)] = base64.b64decode(str(v), validate=False)
            except (ValueError, TypeError):
                raise ConfigError(f"configmap key {k!r} is not valid base64") from None
        for k, v in (obj.get("data") or {}).items():
            out[str(k)] = str(v).encode()
    return out


def _text(data: bytes) -> str:
    # surrogateescape: the child process receives the original bytes.
    return data.decode("utf-8", errors="surrogateescape")


@dataclass
class Sources:
    """The ConfigMaps and Secrets of the pod's namespace a spec refers to (None: absent)."""

    configmaps: dict[str, JSON | None] = field(default_factory=dict)
    secrets: dict[str, JSON | None] = field(default_factory=dict)
    #: Service-account tokens by `podspec.volumes.token_key` (from TokenRequest).
    tokens: dict[str, str] = field(default_factory=dict)


def referenced_sources(pod: JSON) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets that the pod's env, envFrom and volumes use."""
    cms: set[str] = set()
    secrets: set[str] = set()
    spec = pod.get("spec") or {}
    for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if vf.get("configMapKeyRef", {}).get("name"):
                cms.add(str(vf["configMapKeyRef"]["name"]))
            if vf.get("secretKeyRef", {}).get("name"):
                secrets.add(str(vf["secretKeyRef"]["name"]))
        for ef in c.get("envFrom") or []:
            if (ef.get("configMapRef") or {}).get("name"):
                cms.add(str(ef["configMapRef"]["name"]))
            if (ef.get("secretRef") or {}).get("name"):
                secrets.add(str(ef["secretRef"]["name"]))
    for v in spec.get("volumes") or []:
        if (v.get("configMap") or {}).get("name"):
            cms.add(str(v["configMap"]["name"]))
        if (v.get("secret") or {}).get("secretName"):
            secrets.add(str(v["secret"]["secretName"]))
        for src in (v.get("projected") or {}).get("sources") or []:
            if (src.get("configMap") or {}).get("name"):
                cms.add(str(src["configMap"]["name"]))
            if (src.get("secret") or {}).get("name"):
                secrets.add(str(src["secret"]["name"]))
    return cms, secrets


def _lookup_key(
    sources: Sources, kind: Literal["configmap", "secret"], ref: JSON, namespace: str
) -> str | None:
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional", False))
    table = sources.configmaps if kind == "configmap" else sources.secrets
    obj = table.get(name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    data = object_data(obj, secret=kind == "secret")
    if key not in data:
        if optional:
            return None
        label = "ConfigMap" if kind == "configmap" else "Secret"
        raise ConfigError(f"couldn't find key {key} in {label} {namespace}/{name}")
    return _text(data[key])


def container_env(
    pod: JSON,
    container: JSON,
    *,
    pod_ip: str,
    host_ip: str,
    sources: Sources,
    services_env: Mapping[str, str],
    allocatable: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """The environment a container declares, resolved as the kubelet does.

    Order and precedence follow the kubelet's makeEnvironmentVariables: envFrom
    (values not expanded; invalid keys skipped), then `env` in order (each value
    `$(VAR)`-expanded against what is defined so far and the service variables), then
    the service variables for names still undefined. Raises ConfigError when a required
    ConfigMap, Secret or key is missing.
    """
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    spec = pod.get("spec") or {}
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    env: dict[str, str] = {}
    for ef in container.get("envFrom") or []:
        prefix = str(ef.get("prefix") or "")
        if ef.get("configMapRef") is not None or ef.get("secretRef") is not None:
            secret = ef.get("secretRef") is not None
            ref = ef["secretRef"] if secret else ef["configMapRef"]
            name = str(ref.get("name", ""))
            table = sources.secrets if secret else sources.configmaps
            obj = table.get(name)
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{"secret" if secret else "configmap"} "{name}" not found')
            for k, v in sorted(object_data(obj, secret=secret).items()):
                if valid_env_name(prefix + k):
                    env[prefix + k] = _text(v)
    for e in container.get("env") or []:
        name = str(e.get("name", ""))
        if not name:
            continue
        if e.get("valueFrom"):
            vf = e["valueFrom"]
            value: str | None
            if "fieldRef" in vf:
                value = field_value(pod, str(vf["fieldRef"].get("fieldPath", "")), pod_ip, host_ip)
            elif "resourceFieldRef" in vf:
                value = resource_field_value(
                    containers,
                    vf["resourceFieldRef"],
                    str(container.get("name", "")),
                    allocatable if allocatable is not None else node_allocatable(),
                )
            elif "configMapKeyRef" in vf:
                value = _lookup_key(sources, "configmap", vf["configMapKeyRef"], namespace)
            elif "secretKeyRef" in vf:
                value = _lookup_key(sources, "secret", vf["secretKeyRef"], namespace)
            else:
                raise ConfigError(f"env {name}: unsupported valueFrom {sorted(vf)}")
            if value is None:  # optional and missing: the variable is not set
                continue
            env[name] = value
        else:
            mapping = {**services_env, **env}
            env[name] = expand(str(e.get("value") or ""), mapping)
    for key, val in services_env.items():
        env.setdefault(key, val)
    return env
