"""A container's command line, its restart policy and back-off."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from devcluster.podspec.common import JSON, ConfigError
from devcluster.podspec.env import expand

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
