"""A container's processes: found by a marker every one of them inherits, killed together.

A container is its process group (each container process starts in its own session)
plus any descendant that left the group (torchrun starts its workers in new sessions),
found by `MARKER_ENV` in its environment. Every container process also carries
`STATE_ENV`, so that a kubelet can kill what a previous one on the same state directory
left behind. Finding processes by their environment needs Linux's /proc; elsewhere only
the process group is signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
from collections.abc import Iterable

#: Every process of a container inherits these; they find stray processes.
MARKER_ENV = "DEVCLUSTER_CONTAINER_ID"
STATE_ENV = "DEVCLUSTER_STATE_DIR"

# Process groups alive right now, killed at interpreter exit if stop() never ran.
LIVE_GROUPS: set[int] = set()


@atexit.register
def _kill_live_groups() -> None:  # pragma: no cover - exit path
    for pgid in list(LIVE_GROUPS):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def _find_marked(needles: Iterable[bytes]) -> list[int]:
    """Pids of processes whose environment contains any of the `KEY=VALUE` needles."""
    wanted = [b"\0" + n + b"\0" for n in needles]
    me = os.getpid()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found  # not Linux: process groups only
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                data = b"\0" + f.read() + b"\0"
        except OSError:
            continue
        if any(w in data for w in wanted):
            found.append(int(name))
    return found


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_container_sync(pgid: int | None, marker: str) -> None:
    """SIGKILL a container's process group and every process carrying its marker."""
    if pgid is not None:
        signal_group(pgid, signal.SIGKILL)
    for pid in _find_marked([f"{MARKER_ENV}={marker}".encode()]):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def reap_strays_sync(state_dir: str) -> int:
    """Kill the processes of containers a previous kubelet on this state dir left behind."""
    pids = _find_marked([f"{STATE_ENV}={state_dir}".encode()])
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def start_error_message(argv0: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename in (argv0, None) and "/" not in argv0:
        detail = "executable file not found in $PATH"
    elif exc.errno == errno.ENOENT and exc.filename not in (argv0, None):
        detail = f"chdir to {exc.filename}: no such file or directory"
    else:
        detail = (exc.strerror or str(exc)).lower()
    return f'failed to start container process: exec: "{argv0}": {detail}'
