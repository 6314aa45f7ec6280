"""A worker pod of several training processes (`worker.processesPerPod`).

Nodes with several GPUs run one process per GPU. The pod's main process starts that
many `python -m lmworker.train` processes, each with its LOCAL_RANK (on a GPU it trains
on cuda:LOCAL_RANK) and the pod's group id, and supervises them:

- each registers with the rendezvous on its own; the rendezvous forms rounds of whole
  pods only (`lmworker.rounds`), so the pod's processes join and leave together and
  ranks are pod-major (global rank = pod rank x processes + local rank);
- SIGTERM (scale-down, preemption) is passed to every process, which leave at the
  same step boundary;
- a process that fails takes the pod out: the others are killed, the rendezvous drops
  the whole pod from the next round, and the pod exits non-zero so that it is replaced;
- the pod's termination message is local rank 0's (every process learns the same
  outcome), or says which process failed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmworker.config import (
    EXIT_PERMANENT,
    LOCAL_RANK_ENV,
    LOCAL_WORLD_SIZE_ENV,
    METRICS_PORT,
    TERMINATION_LOG_ENV,
)
from lmworker.config import POD_GROUP_ENV as GROUP_ENV

log = logging.getLogger("lmworker.pod")

METRICS_PORT_ENV = "ELASTICLM_METRICS_PORT"
POLL = 0.1


class LocalIdentityError(ValueError):
    """LOCAL_RANK / LOCAL_WORLD_SIZE do not describe a process of this pod."""


def local_identity(env: Mapping[str, str]) -> tuple[int, int, str]:
    """(local rank, processes in the pod, group id) of this process.

    A pod of one process (no LOCAL_WORLD_SIZE) is its own group: "".
    """
    try:
        size = int(env.get(LOCAL_WORLD_SIZE_ENV, "1"))
        rank = int(env.get(LOCAL_RANK_ENV, "0"))
    except ValueError as exc:
        raise LocalIdentityError(
            f"{LOCAL_RANK_ENV} and {LOCAL_WORLD_SIZE_ENV} must be integers: {exc}"
        ) from exc
    if size < 1 or not 0 <= rank < size:
        raise LocalIdentityError(
            f"{LOCAL_RANK_ENV}={rank} must lie in 0..{LOCAL_WORLD_SIZE_ENV}-1 ({size - 1})"
        )
    group = env.get(GROUP_ENV, "") if size > 1 else ""
    if size > 1 and not group:
        raise LocalIdentityError(f"{GROUP_ENV} is not set: start the pod's processes together")
    return rank, size, group


def child_env(
    base: Mapping[str, str], local_rank: int, size: int, group: str, termination: Path
) -> dict[str, str]:
    """The environment of local process `local_rank`: its identity, its own metrics port
    (local rank 0 keeps the pod's, which the operator scrapes and probes) and its own
    termination file (the main process writes the pod's message)."""
    port = int(base.get(METRICS_PORT_ENV, str(METRICS_PORT)))
    return {
        **base,
        LOCAL_RANK_ENV: str(local_rank),
        LOCAL_WORLD_SIZE_ENV: str(size),
        GROUP_ENV: group,
        METRICS_PORT_ENV: str(port + local_rank),
        TERMINATION_LOG_ENV: str(termination),
    }


def _failures(codes: list[int], first: int | None) -> list[tuple[int, int]]:
    """(local rank, code) of the failed processes, the one that failed first first (the
    others may only have been stopped because of it)."""
    failed = [(k, c) for k, c in enumerate(codes) if c != 0]
    return sorted(failed, key=lambda f: f[0] != first)


def pod_exit_code(codes: list[int], first: int | None = None) -> int:
    """0 when every process succeeded; a permanent failure wins over a retryable one,
    then the code of the process that failed first."""
    failed = _failures(codes, first)
    if not failed:
        return 0
    if any(c == EXIT_PERMANENT for _, c in failed):
        return EXIT_PERMANENT
    code = failed[0][1]
    return 128 - code if code < 0 else code  # killed by a signal: 128 + its number


def pod_report(
    codes: list[int], reports: list[dict[str, Any] | None], first: int | None = None
) -> dict[str, Any]:
    """The pod's termination message from its processes' exit codes and messages."""
    failed = _failures(codes, first)
    if not failed:
        return reports[0] or {"completed": False, "error": "local rank 0 left no report"}
    for k, c in failed:
        report = reports[k]
        if c == EXIT_PERMANENT and report is not None:
            return {**report, "localRank": k}
    k, c = failed[0]
    how = f"was killed by signal {-c}" if c < 0 else f"exited with {c}"
    return {
        "completed": False,
        "error": f"training process of local rank {k} {how}; the pod's processes stopped",
        "localRank": k,
    }


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it when the pod's main process dies, so
    that no training process outlives its pod's supervisor."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def supervise(size: int, argv: list[str] | None = None) -> int:
    """Run `size` training processes of this pod until all have exited; the pod's code."""
    from lmworker.train import write_termination_message

    group = uuid.uuid4().hex
    workdir = Path(tempfile.mkdtemp(prefix="elasticlm-pod-"))
    command = [sys.executable, "-m", "lmworker.train", *(argv or [])]
    procs: list[subprocess.Popen[bytes]] = []
    for k in range(size):
        env = child_env(os.environ, k, size, group, workdir / f"local-{k}.json")
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        )
    log.info("started %d training processes (group %s)", size, group[:8])

    def forward(signum: int, _frame: object) -> None:
        log.info("signal %d: passing it to the pod's training processes", signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    first: int | None = None
    # Poll every process each time round (any() would stop at the first one running).
    while [p.poll() for p in procs].count(None):
        if first is None:
            crashed = [(k, p.returncode) for k, p in enumerate(procs) if p.returncode]
            if crashed:
                first, code = crashed[0]
                log.error(
                    "training process of local rank %d exited with %s: stopping the pod's "
                    "other processes so that the pod leaves the round as a whole",
                    first,
                    code,
                )
                for p in procs:
                    if p.poll() is None:
                        p.kill()
        time.sleep(POLL)
    codes = [int(p.returncode) for p in procs]
    reports = [_read_report(workdir / f"local-{k}.json") for k in range(size)]
    if first is None:  # every process was still running at the last poll
        first = next((k for k, c in enumerate(codes) if c), None)
    report = pod_report(codes, reports, first)
    write_termination_message(report)
    code = pod_exit_code(codes, first)
    log.info("pod exiting with %d: %s", code, json.dumps(report)[:500])
    return code
