"""Volumes as local directories, their files, and mount paths rewritten to them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from devcluster import paths
from devcluster.podspec.common import JSON, ConfigError
from devcluster.podspec.env import (
    Sources,
    field_value,
    node_allocatable,
    object_data,
    resource_field_value,
)

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
                token_source = src["serviceAccountToken"]
                p = _safe_relpath(str(token_source.get("path") or "token"))
                token = sources.tokens.get(token_key(token_source))
                if token is None:
                    raise ConfigError(
                        f"no service account token for audience "
                        f"{token_source.get('audience') or '(the API server)'}"
                    )
                files[p] = (token.encode(), _mode(default, 0o600))
        return files
    return None


DEFAULT_TOKEN_SECONDS = 3600


def token_key(source: JSON) -> str:
    """Identifies a projected serviceAccountToken source: its audience and lifetime."""
    seconds = source.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS
    return f"{source.get('audience') or ''}|{seconds}"


def token_sources(pod: JSON) -> list[JSON]:
    """The serviceAccountToken sources of the pod's projected volumes."""
    found: list[JSON] = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        for src in (v.get("projected") or {}).get("sources") or []:
            if isinstance(src.get("serviceAccountToken"), dict):
                found.append(src["serviceAccountToken"])
    return found


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
