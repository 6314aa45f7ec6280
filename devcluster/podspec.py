"""Pure helpers of the devcluster kubelet: what a pod spec means on this machine.

Nothing here does I/O; `devcluster.kubelet` fetches the objects, calls these functions
and applies their results. Every function follows the documented Kubernetes semantics
where devcluster can (environment variables and `$(VAR)` expansion, service links,
restart back-off, pod phase and conditions, probe defaults) and says where it cannot.

Mounts without a mount namespace
--------------------------------
A container's `volumeMounts[].mountPath` cannot exist as such: every pod shares this
machine's file system. Each volume is mapped to a local directory instead, and
`PathRewriter` rewrites a mount path (plus its `subPath`) to that directory wherever
it appears as a whole path token in the container's command, args, env values and
workingDir (longest mount path first). See the `devcluster.kubelet` docstring.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import os
import random
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from devcluster import paths
from devcluster.gofmt import go_quote
from devcluster.values import as_dict, as_list

JSON = dict[str, Any]

#: The name the kubelet puts on its container IDs (`<runtime>://<id>`).
RUNTIME = "devcluster"


class ConfigError(Exception):
    """A container cannot be configured yet (CreateContainerConfigError in Kubernetes).

    The message is shown in the container's waiting state; it never holds a secret value.
    """


# --------------------------------------------------------------------------------------
# Time


def rfc3339(t: float) -> str:
    """A metav1.Time: RFC 3339 in UTC with second precision, as the API serves it."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    """The POSIX time of a metav1.Time (or MicroTime) string; None when absent or bad."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


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


# --------------------------------------------------------------------------------------
# Volumes and mount paths


def mount_env_name(volume: str) -> str:
    """`DEVCLUSTER_MOUNT_<VOLUME>`: where a volume lives locally (upper case, non-alnum -> _)."""
    return "DEVCLUSTER_MOUNT_" + re.sub(r"[^A-Za-z0-9]", "_", volume).upper()


def volume_dirs(pod: JSON, state_dir: Path) -> dict[str, Path]:
    """The local directory (or file, for a hostPath file) standing in for each volume."""
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "")
    uid = str(meta.get("uid") or "")
    out: dict[str, Path] = {}
    for v in (pod.get("spec") or {}).get("volumes") or []:
        vname = str(v.get("name", ""))
        if not vname:
            continue
        if v.get("persistentVolumeClaim"):
            claim = str(v["persistentVolumeClaim"].get("claimName", vname))
            out[vname] = paths.claim_dir(state_dir, ns, claim)
        elif v.get("hostPath"):
            out[vname] = Path(str(v["hostPath"].get("path", "/")))
        else:
            out[vname] = paths.volume_dir(state_dir, ns, name, uid, vname)
    return out


def _safe_relpath(p: str) -> str:
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if not parts or ".." in parts or p.startswith("/"):
        raise ConfigError(f"invalid volume item path {p!r}")
    return "/".join(parts)


def _mode(value: Any, default: int) -> int:
    return int(value) & 0o7777 if isinstance(value, int) else default


def _items_files(
    data: Mapping[str, bytes], items: Sequence[JSON] | None, mode: int, what: str, optional: bool
) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {}
    if not items:
        for k, v in data.items():
            files[_safe_relpath(k)] = (v, mode)
        return files
    for item in items:
        key = str(item.get("key", ""))
        if key not in data:
            if optional:
                continue
            raise ConfigError(f"configmap/secret {what}: key {key!r} not found")
        files[_safe_relpath(str(item.get("path") or key))] = (
            data[key],
            _mode(item.get("mode"), mode),
        )
    return files


def volume_files(
    volume: JSON, pod: JSON, sources: Sources, *, pod_ip: str, host_ip: str
) -> dict[str, tuple[bytes, int]] | None:
    """The files to write into a configMap, secret, downwardAPI or projected volume.

    Returns None for volumes that are plain directories (emptyDir, PVC, hostPath, and
    unsupported types). Relative path -> (content, file mode). ConfigMap files default
    to mode 0644, Secret files to 0600 (`defaultMode`/`mode` are honoured). Raises
    ConfigError when a required object or key is missing.
    """
    if volume.get("configMap") is not None:
        src = volume["configMap"]
        return _source_files("configmap", src, src.get("name"), sources, 0o644)
    if volume.get("secret") is not None:
        src = volume["secret"]
        return _source_files("secret", src, src.get("secretName"), sources, 0o600)
    if volume.get("downwardAPI") is not None:
        dapi = volume["downwardAPI"]
        return _downward_files(dapi.get("items") or [], pod, pod_ip, host_ip, dapi)
    if volume.get("projected") is not None:
        proj = volume["projected"]
        files: dict[str, tuple[bytes, int]] = {}
        default = proj.get("defaultMode")
        for src in proj.get("sources") or []:
            if src.get("configMap") is not None:
                c = dict(src["configMap"])
                c.setdefault("defaultMode", default)
                files.update(_source_files("configmap", c, c.get("name"), sources, 0o644))
            elif src.get("secret") is not None:
                s = dict(src["secret"])
                s.setdefault("defaultMode", default)
                files.update(_source_files("secret", s, s.get("name"), sources, 0o600))
            elif src.get("downwardAPI") is not None:
                files.update(
                    _downward_files(
                        src["downwardAPI"].get("items") or [],
                        pod,
                        pod_ip,
                        host_ip,
                        {"defaultMode": default},
                    )
                )
            elif src.get("serviceAccountToken") is not None:
                # devcluster has no authentication: a placeholder token.
                p = _safe_relpath(str(src["serviceAccountToken"].get("path") or "token"))
                files[p] = (b"devcluster", _mode(default, 0o600))
        return files
    return None


def _source_files(
    kind: Literal["configmap", "secret"],
    src: JSON,
    name: Any,
    sources: Sources,
    default_mode: int,
) -> dict[str, tuple[bytes, int]]:
    table = sources.configmaps if kind == "configmap" else sources.secrets
    obj = table.get(str(name))
    optional = bool(src.get("optional", False))
    if obj is None:
        if optional:
            return {}
        raise ConfigError(f'{kind} "{name}" not found')
    mode = _mode(src.get("defaultMode"), default_mode)
    return _items_files(
        object_data(obj, secret=kind == "secret"), src.get("items"), mode, str(name), optional
    )


def _downward_files(
    items: Sequence[JSON], pod: JSON, pod_ip: str, host_ip: str, dapi: JSON
) -> dict[str, tuple[bytes, int]]:
    mode = _mode(dapi.get("defaultMode"), 0o644)
    files: dict[str, tuple[bytes, int]] = {}
    spec = pod.get("spec") or {}
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    for item in items:
        path = _safe_relpath(str(item.get("path", "")))
        if item.get("fieldRef"):
            value = field_value(pod, str(item["fieldRef"].get("fieldPath", "")), pod_ip, host_ip)
        elif item.get("resourceFieldRef"):
            value = resource_field_value(
                containers, item["resourceFieldRef"], "", node_allocatable()
            )
        else:
            continue
        files[path] = (value.encode(), _mode(item.get("mode"), mode))
    return files


def container_mounts(container: JSON, dirs: Mapping[str, Path]) -> list[tuple[str, Path]]:
    """(mountPath, local path) per volumeMount; subPath (and subPathExpr) appended."""
    out: list[tuple[str, Path]] = []
    for m in container.get("volumeMounts") or []:
        vname = str(m.get("name", ""))
        mpath = str(m.get("mountPath", ""))
        if vname not in dirs:
            raise ConfigError(f'volumeMount "{vname}": no volume of that name')
        if not mpath.startswith("/"):
            raise ConfigError(f"volumeMount {vname!r}: mountPath {mpath!r} must be absolute")
        local = dirs[vname]
        sub = str(m.get("subPath") or m.get("subPathExpr") or "")
        if sub:
            local = local / _safe_relpath(sub)
        out.append((mpath, local))
    return out


class PathRewriter:
    """Rewrites mount paths to their local directories on whole path tokens.

    A mount path matches only where it starts a path (at the start of the string or
    after a character that cannot be part of a path, such as space, `=`, `:`, `,` or a
    quote) and ends one (end of string, `/`, or such a character), so `/data` rewrites
    `/data`, `/data/x` and `--dir=/data` but not `/database`, `/x/data` or `$HOME/data`.
    Longer mount paths win. Each string is rewritten once, so a local directory that
    happens to start with a mount path is never rewritten again.
    """

    def __init__(self, mounts: Iterable[tuple[str, Path | str]]) -> None:
        table: dict[str, str] = {}
        for mpath, local in mounts:
            key = mpath.rstrip("/")
            if key:  # a mount at "/" cannot be rewritten meaningfully
                table[key] = str(local)
        self.table = table
        if table:
            alternation = "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))
            self._re: re.Pattern[str] | None = re.compile(
                rf"(?<![\w.\-/~$])({alternation})(?=/|$|[^\w.\-])"
            )
        else:
            self._re = None

    def __call__(self, text: str) -> str:
        if self._re is None:
            return text
        return self._re.sub(lambda m: self.table[m.group(1)], text)


# --------------------------------------------------------------------------------------
# Commands


def resolve_program(word: str, path_env: str | None) -> str:
    """The executable for argv[0], preferring the current Python environment.

    `python`, `python3` and `python3.X` run `sys.executable`; a bare name found in the
    directory of `sys.executable` (the virtual environment's `bin`, e.g. `torchrun`)
    runs from there; any other bare name is looked up on PATH; a path is used as is.
    """
    if re.fullmatch(r"python(3(\.\d+)?)?", word):
        return sys.executable
    if "/" in word:
        return word
    venv_bin = Path(sys.executable).parent / word
    if venv_bin.is_file() and os.access(venv_bin, os.X_OK):
        return str(venv_bin)
    found = shutil.which(word, path=path_env)
    return found or word


def container_argv(container: JSON, env: Mapping[str, str]) -> list[str]:
    """command + args with `$(VAR)` expanded; `args` alone when there is no command.

    Raises ConfigError when neither is given (devcluster has no image entrypoint).
    """
    command = [str(x) for x in container.get("command") or []]
    args = [str(x) for x in container.get("args") or []]
    argv = [expand(x, env) for x in command + args]
    if not argv:
        raise ConfigError(
            "container has neither command nor args (devcluster does not run images' entrypoints)"
        )
    return argv


# --------------------------------------------------------------------------------------
# Restart policy and back-off


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Seconds to wait before restarting a container that has terminated `failures` times
    since its back-off was last reset.

    As the kubelet: the first restart is immediate, then `base`, doubling up to `cap`
    (Kubernetes: base 10 s, cap 300 s; devcluster defaults to 1 s and 30 s).
    """
    if failures <= 1:
        return 0.0
    return float(min(cap, base * (2 ** (failures - 2))))


def should_restart(policy: str, exit_code: int) -> bool:
    """Whether a terminated regular container restarts under the pod's restartPolicy."""
    if policy == "Never":
        return False
    if policy == "OnFailure":
        return exit_code != 0
    return True  # Always, the default


def exit_status(returncode: int) -> tuple[int, int | None]:
    """(exitCode, signal) of a process from its Python returncode (negative: signal)."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


# --------------------------------------------------------------------------------------
# Probes


@dataclass(frozen=True)
class ProbeSpec:
    """A probe with Kubernetes' defaults applied and named ports resolved."""

    kind: Literal["startup", "liveness", "readiness"]
    handler: Literal["httpGet", "tcpSocket", "exec", "grpc", "none"]
    port: int | None = None
    host: str | None = None
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None
    #: Why the probe cannot work (e.g. an unknown named port): it then always fails.
    error: str | None = None


def _int(value: Any, default: int, minimum: int) -> int:
    try:
        return max(minimum, int(value)) if value is not None else default
    except (TypeError, ValueError):
        return default


def resolve_port(port: Any, container: JSON) -> int | None:
    """A port given by number or by the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for p in container.get("ports") or []:
            if p.get("name") == port and p.get("containerPort") is not None:
                return int(p["containerPort"])
    return None


def parse_probe(
    kind: Literal["startup", "liveness", "readiness"], probe: JSON | None, container: JSON
) -> ProbeSpec | None:
    """The container's probe of that kind, or None when it has none."""
    if not probe:
        return None
    common: dict[str, Any] = {
        "kind": kind,
        "initial_delay": float(_int(probe.get("initialDelaySeconds"), 0, 0)),
        "period": float(_int(probe.get("periodSeconds"), 10, 1)),
        "timeout": float(_int(probe.get("timeoutSeconds"), 1, 1)),
        "success_threshold": 1
        if kind != "readiness"
        else _int(probe.get("successThreshold"), 1, 1),
        "failure_threshold": _int(probe.get("failureThreshold"), 3, 1),
        "termination_grace": (
            float(probe["terminationGracePeriodSeconds"])
            if isinstance(probe.get("terminationGracePeriodSeconds"), int)
            else None
        ),
    }
    if probe.get("httpGet") is not None:
        h = probe["httpGet"]
        port = resolve_port(h.get("port"), container)
        headers = tuple(
            (str(x.get("name", "")), str(x.get("value", ""))) for x in h.get("httpHeaders") or []
        )
        path = str(h.get("path") or "/")
        return ProbeSpec(
            handler="httpGet",
            port=port,
            host=h.get("host") or None,
            path=path if path.startswith("/") else "/" + path,
            scheme=str(h.get("scheme") or "HTTP").upper(),
            headers=headers,
            error=None if port is not None else f"unknown port {h.get('port')!r}",
            **common,
        )
    if probe.get("tcpSocket") is not None:
        t = probe["tcpSocket"]
        port = resolve_port(t.get("port"), container)
        return ProbeSpec(
            handler="tcpSocket",
            port=port,
            host=t.get("host") or None,
            error=None if port is not None else f"unknown port {t.get('port')!r}",
            **common,
        )
    if probe.get("exec") is not None:
        cmd = tuple(str(x) for x in probe["exec"].get("command") or [])
        return ProbeSpec(
            handler="exec",
            command=cmd,
            error=None if cmd else "exec probe without a command",
            **common,
        )
    if probe.get("grpc") is not None:
        port = resolve_port(probe["grpc"].get("port"), container)
        return ProbeSpec(handler="grpc", port=port, **common)
    return ProbeSpec(handler="none", error="probe has no handler", **common)


# --------------------------------------------------------------------------------------
# Pod status


def is_terminated(status: JSON | None) -> bool:
    return bool(status and (status.get("state") or {}).get("terminated") is not None)


def _exit_code(state: JSON | None) -> int | None:
    term = (state or {}).get("terminated")
    if term is None:
        return None
    return int(term.get("exitCode", 0))


def compute_phase(
    restart_policy: str,
    init_names: Sequence[str],
    init_statuses: Mapping[str, JSON],
    names: Sequence[str],
    statuses: Mapping[str, JSON],
    *,
    terminal: bool = False,
) -> str:
    """The pod phase from its container statuses, as the kubelet's getPhase.

    `terminal` says the pod will run nothing more (deleted, or past its deadline): then
    stopped containers make the phase Succeeded or Failed whatever the restartPolicy.
    """
    pending_init = 0
    failed_init = 0
    for name in init_names:
        st = init_statuses.get(name)
        if st is None:
            pending_init += 1
            continue
        state = st.get("state") or {}
        last = st.get("lastState") or {}
        if "running" in state:
            pending_init += 1
        elif "terminated" in state:
            if _exit_code(state) != 0:
                failed_init += 1
        elif "waiting" in state:
            if "terminated" in last:
                if _exit_code(last) != 0:
                    failed_init += 1
            else:
                pending_init += 1
        else:
            pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    any_started = False
    for name in names:
        st = statuses.get(name)
        if st is None:
            unknown += 1
            continue
        state = st.get("state") or {}
        last = st.get("lastState") or {}
        if "running" in state:
            running += 1
            any_started = True
        elif "terminated" in state:
            stopped += 1
            any_started = True
            if _exit_code(state) == 0:
                succeeded += 1
        elif "waiting" in state:
            if "terminated" in last:
                stopped += 1
                any_started = True
            else:
                waiting += 1
        else:
            unknown += 1
    if failed_init > 0 and restart_policy == "Never":
        return "Failed"
    phase = "Pending"
    if (pending_init > 0 and not any_started) or waiting > 0:
        phase = "Pending"
    elif running > 0 and unknown == 0:
        phase = "Running"
    elif running == 0 and stopped > 0 and unknown == 0:
        if terminal or restart_policy in ("Never", "OnFailure"):
            if stopped == succeeded:
                phase = "Succeeded"
            elif terminal or restart_policy == "Never":
                phase = "Failed"
            else:
                phase = "Running"  # OnFailure: restarting the failed ones
        else:
            phase = "Running"  # Always: all restarting
    if terminal and phase not in ("Succeeded", "Failed"):
        # The kubelet never leaves a pod it has finished with in a non-terminal phase.
        return "Failed"
    return phase


CONDITION_ORDER = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")


def pod_conditions(
    *,
    previous: Sequence[JSON],
    sandbox_ready: bool,
    init_names: Sequence[str],
    init_statuses: Mapping[str, JSON],
    names: Sequence[str],
    statuses: Mapping[str, JSON],
    phase: str,
    readiness_gates: Sequence[str] = (),
    now: float,
) -> list[JSON]:
    """PodReadyToStartContainers, Initialized, Ready and ContainersReady (plus whatever
    other conditions the pod already has, such as PodScheduled), each keeping its
    lastTransitionTime while its status does not change."""
    prev = {str(c.get("type")): c for c in previous}
    terminal = phase in ("Succeeded", "Failed")

    incomplete = [
        n for n in init_names if _exit_code((init_statuses.get(n) or {}).get("state")) != 0
    ]
    initialized = not incomplete or phase == "Succeeded"
    unready = [n for n in names if not (statuses.get(n) or {}).get("ready")]
    containers_ready = not unready and not terminal
    gates_ok = all(str((prev.get(g) or {}).get("status")) == "True" for g in readiness_gates)

    desired: dict[str, tuple[bool, str | None, str | None]] = {}
    desired["PodReadyToStartContainers"] = (sandbox_ready and not terminal, None, None)
    desired["Initialized"] = (
        (True, None, None)
        if initialized
        else (
            False,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        )
    )
    if terminal:
        not_ready: tuple[bool, str | None, str | None] = (False, "PodCompleted", None)
        desired["Ready"] = not_ready
        desired["ContainersReady"] = not_ready
    else:
        msg = f"containers with unready status: [{' '.join(unready)}]"
        desired["ContainersReady"] = (
            (True, None, None) if containers_ready else (False, "ContainersNotReady", msg)
        )
        if not containers_ready:
            desired["Ready"] = (False, "ContainersNotReady", msg)
        elif not gates_ok:
            missing = [
                g for g in readiness_gates if str((prev.get(g) or {}).get("status")) != "True"
            ]
            desired["Ready"] = (
                False,
                "ReadinessGatesNotReady",
                f"corresponding condition of pod readiness gate {missing[0]!r} is not True",
            )
        else:
            desired["Ready"] = (True, None, None)

    out: list[JSON] = []
    ts = rfc3339(now)
    for ctype in CONDITION_ORDER:
        ok, reason, message = desired[ctype]
        status = "True" if ok else "False"
        old = prev.get(ctype)
        cond: JSON = {"type": ctype, "status": status, "lastProbeTime": None}
        if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
            cond["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = ts
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        out.append(cond)
    managed = set(CONDITION_ORDER)
    others = [c for c in previous if str(c.get("type")) not in managed]
    if not any(c.get("type") == "PodScheduled" for c in others):
        others.insert(
            0,
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": ts,
            },
        )
    return out + others


def qos_class(pod: JSON) -> str:
    """Guaranteed, Burstable or BestEffort, from the containers' requests and limits."""
    spec = as_dict(pod.get("spec"))
    containers = as_list(spec.get("containers")) + as_list(spec.get("initContainers"))
    requests_any = limits_all = False
    guaranteed = bool(containers)
    for c in containers:
        res = as_dict(as_dict(c).get("resources"))
        req, lim = as_dict(res.get("requests")), as_dict(res.get("limits"))
        if req or lim:
            requests_any = True
        for resource in ("cpu", "memory"):
            differs = resource in req and str(req[resource]) != str(lim.get(resource))
            if resource not in lim or differs:
                guaranteed = False
        limits_all = limits_all or bool(lim)
    if guaranteed and limits_all:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"


# --------------------------------------------------------------------------------------
# Pod IPs


class IPAllocator:
    """Hands out loopback addresses from a CIDR (default 127.10.0.0/16), one per pod.

    The network address and the first host address are never given out. Addresses are
    handed out round robin, so a released address is reused as late as possible (stale
    connections then find nothing rather than another pod). The round starts at a random
    address unless `start` (an offset into the range) is given, so that two devclusters
    on one machine (parallel test runs) rarely hand out the same addresses.
    """

    def __init__(self, cidr: str = "127.10.0.0/16", *, start: int | None = None) -> None:
        self.network = ipaddress.ip_network(cidr)
        if not self.network.is_loopback:
            raise ValueError(f"pod CIDR {cidr} is not a loopback range")
        self._first = int(self.network.network_address) + 2
        self._last = int(self.network.broadcast_address) - 1
        if self._last < self._first:
            raise ValueError(f"pod CIDR {cidr} is too small")
        size = self._last - self._first + 1
        offset = random.randrange(size) if start is None else start % size
        self._next = self._first + offset
        self.in_use: set[str] = set()

    def __contains__(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr in self.network and self._first <= int(addr) <= self._last

    def allocate(self, preferred: str | None = None) -> str:
        """A free address; `preferred` (e.g. the pod's recorded podIP) when it is free."""
        if preferred and preferred in self and preferred not in self.in_use:
            self.in_use.add(preferred)
            return preferred
        size = self._last - self._first + 1
        for _ in range(size):
            ip = str(ipaddress.ip_address(self._next))
            self._next = self._first if self._next >= self._last else self._next + 1
            if ip not in self.in_use:
                self.in_use.add(ip)
                return ip
        raise RuntimeError(f"no free pod IP left in {self.network}")

    def release(self, ip: str | None) -> None:
        if ip:
            self.in_use.discard(ip)


def iter_containers(pod: JSON) -> Iterator[tuple[bool, JSON]]:
    """(is_init, container) for the pod's init containers, then its containers."""
    spec = pod.get("spec") or {}
    for c in spec.get("initContainers") or []:
        yield True, c
    for c in spec.get("containers") or []:
        yield False, c
