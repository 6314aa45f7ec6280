"""Where devcluster keeps its files under the state directory.

The API server and the kubelet share these conventions: the kubelet writes container
logs and volume contents here, and the API server serves the logs from here.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    """Where `elasticlm local` keeps what outlives one run (the running cluster's info)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "elasticlm" / "devcluster"


def snapshot_file(state_dir: Path) -> Path:
    """The JSON snapshot of every API object, for `--state-dir` persistence."""
    return state_dir / "objects.json"


def pod_dir(state_dir: Path, namespace: str, pod: str, uid: str) -> Path:
    """Everything that belongs to one pod instance (logs, emptyDir, projected files)."""
    return state_dir / "pods" / f"{namespace}_{pod}_{uid}"


def termination_message_file(
    state_dir: Path, namespace: str, pod: str, uid: str, container: str
) -> Path:
    """Stands in for the container's terminationMessagePath (see the kubelet)."""
    return pod_dir(state_dir, namespace, pod, uid) / "termination" / container


def container_log_file(state_dir: Path, namespace: str, pod: str, uid: str, container: str) -> Path:
    """Combined stdout and stderr of a container's current run.

    On a restart the kubelet moves it to `previous_log_file` and starts a new one.
    """
    return pod_dir(state_dir, namespace, pod, uid) / "logs" / f"{container}.log"


def previous_log_file(state_dir: Path, namespace: str, pod: str, uid: str, container: str) -> Path:
    """Log of the container's previous run, for `kubectl logs --previous`."""
    return pod_dir(state_dir, namespace, pod, uid) / "logs" / f"{container}.previous.log"


def volume_dir(state_dir: Path, namespace: str, pod: str, uid: str, volume: str) -> Path:
    """An emptyDir, configMap or secret volume of one pod."""
    return pod_dir(state_dir, namespace, pod, uid) / "volumes" / volume


def claim_dir(state_dir: Path, namespace: str, claim: str) -> Path:
    """The directory standing in for a PersistentVolumeClaim; it outlives pods."""
    return state_dir / "claims" / namespace / claim
