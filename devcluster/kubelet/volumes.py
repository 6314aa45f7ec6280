"""Pod volumes as local directories.

There is no mount namespace: each volume is a directory of this machine (which one is
`podspec.volume_dirs`), and the mount paths are rewritten to it in the container's
command, args, env values and workingDir (`podspec.PathRewriter`). When a pod starts,
its volume directories are created and the configMap, secret, downwardAPI and projected
files written from their sources (`podspec.volume_files`); hostPath volumes are checked
against their type. A volume that cannot be set up yet (a missing configMap or secret)
is retried with back-off, with a FailedMount event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from devcluster.informer import ApiError
from devcluster.kubelet.base import pod_spec
from devcluster.podspec.common import JSON, ConfigError
from devcluster.podspec.volumes import volume_dirs, volume_files

if TYPE_CHECKING:
    from devcluster.kubelet.pod import Pod


async def prepare_volumes(pod: Pod) -> bool:
    """Create and fill the volume directories; retry until they can be (or teardown)."""
    attempt = 0
    while not pod.stopping.is_set():
        try:
            await write_volumes(pod)
            if pod.volume_event_sent:
                for c in pod.containers:
                    if "waiting" in c.state:
                        c.state = {"waiting": {"reason": "ContainerCreating"}}
            return True
        except (ConfigError, ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            message = f"MountVolume.SetUp failed: {exc}"
            for c in pod.containers:
                if "waiting" in c.state:
                    c.state = {"waiting": {"reason": "ContainerCreating", "message": message}}
            pod.mark()
            if not pod.volume_event_sent:
                pod.event("Warning", "FailedMount", message)
                pod.volume_event_sent = True
            attempt += 1
            delay = min(
                pod.kubelet.backoff_max, pod.kubelet.backoff_base * 2 ** min(attempt - 1, 10)
            )
            if await pod.wait_stopping(delay):
                return False
    return False


async def write_volumes(pod: Pod) -> None:
    pod.dirs = volume_dirs(pod.obj, pod.kubelet.state_dir)
    sources = await pod.kubelet.fetch_sources(pod.namespace, pod.obj, tokens=True)
    plan: list[tuple[Path, JSON, dict[str, tuple[bytes, int]] | None]] = []
    for v in pod_spec(pod.obj).get("volumes") or []:
        name = str(v.get("name", ""))
        if name not in pod.dirs:
            continue
        files = volume_files(v, pod.obj, sources, pod_ip=pod.ip or "", host_ip=pod.kubelet.host_ip)
        plan.append((pod.dirs[name], v, files))
    await asyncio.to_thread(_materialize_volumes, plan)


def _materialize_volumes(
    plan: list[tuple[Path, JSON, dict[str, tuple[bytes, int]] | None]],
) -> None:
    for directory, volume, files in plan:
        host_path = volume.get("hostPath")
        if host_path:
            kind = str(host_path.get("type") or "")
            if kind == "DirectoryOrCreate":
                directory.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate":
                directory.parent.mkdir(parents=True, exist_ok=True)
                directory.touch(exist_ok=True)
            elif kind == "Directory" and not directory.is_dir():
                raise ConfigError(f"hostPath type check failed: {directory} is not a directory")
            elif kind == "File" and not directory.is_file():
                raise ConfigError(f"hostPath type check failed: {directory} is not a file")
            continue
        directory.mkdir(parents=True, exist_ok=True)
        for rel, (content, mode) in (files or {}).items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.chmod(tmp, mode)
            os.replace(tmp, target)


def make_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        with contextlib.suppress(OSError):
            d.mkdir(parents=True, exist_ok=True)
