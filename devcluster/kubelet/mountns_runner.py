"""How the kubelet uses `mountns.py`: whether mount namespaces work on this machine,
and the command line that starts a container in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MOUNTNS_SCRIPT = str(Path(__file__).with_name("mountns.py"))


def mount_namespace_problem() -> str | None:
    """None when a child process can have a private mount namespace, else why not."""
    try:
        result = subprocess.run(
            [sys.executable, "-I", MOUNTNS_SCRIPT, "--check"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    return result.stderr.strip() or f"the check exited {result.returncode}"


def _covers(target: str, path: str) -> bool:
    """Whether mounting at `target` would hide `path` (the same directory or one in it)."""
    target = os.path.normpath(target)
    return target == "/" or path == target or path.startswith(target.rstrip("/") + "/")


def wrap_in_mount_namespace(
    argv: list[str],
    mounts: Sequence[tuple[str, str, bool]],
    cwd: str,
    protected: Sequence[str],
    root: str,
) -> tuple[list[str], list[str]]:
    """`argv` started in a private mount namespace with (source, target, readOnly)
    bind mounts, and notes on the mounts left out. `root` is an empty directory the
    namespace may mount its copy of `/` on (see `mountns.py`).

    A mount whose target would hide one of the `protected` paths (devcluster's state
    directory, where the other volumes live, and the Python environment the containers
    run) is left out: with the state directory under /tmp, an emptyDir at /tmp stays a
    rewritten path only. A program that cannot be executed is left unwrapped, so that
    starting it fails as before (StartError with the OS error).
    """
    program = argv[0] if os.path.isabs(argv[0]) else os.path.join(cwd, argv[0])
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
        return argv, []
    keep = [os.path.realpath(p) for p in (*protected, program)]
    spec: list[dict[str, object]] = []
    notes: list[str] = []
    for source, target, read_only in mounts:
        hidden = [p for p in keep if _covers(target, p) or _covers(os.path.realpath(target), p)]
        if hidden:
            notes.append(
                f"volume mount {target} is not bind-mounted (it would hide {hidden[0]}); "
                f"use its rewritten path {source}"
            )
            continue
        spec.append({"source": source, "target": target, "readOnly": read_only})
    if not spec:
        return argv, notes
    document = json.dumps({"root": root, "cwd": cwd, "mounts": spec})
    wrapped = [sys.executable, "-I", MOUNTNS_SCRIPT, document, "--", program, *argv[1:]]
    return wrapped, notes
