"""A container's lifecycle: its runs, restarts, termination and status.

`Container.run` starts the container's process (see `processes`) with the
configuration its pod computes (`ContainerConfig`), waits for it, and restarts it per
restartPolicy with the kubelet's back-off (CrashLoopBackOff while waiting); a
configuration that cannot be computed yet waits as CreateContainerConfigError, and a
command that cannot start ends as StartError. `Container.terminate` runs the preStop
hook, sends SIGTERM to the process group and SIGKILLs every process of the container
after the grace period. The container's status (state, lastState, restartCount, ready,
started and the termination message) is kept here; probes (`probes`) update it while the
process runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from devcluster import paths
from devcluster.informer import ApiError
from devcluster.kubelet.probes import probe_loop, run_handler
from devcluster.kubelet.processes import (
    LIVE_GROUPS,
    MARKER_ENV,
    STATE_ENV,
    kill_container_sync,
    signal_group,
    start_error_message,
)
from devcluster.podspec.common import JSON, RUNTIME, ConfigError, rfc3339
from devcluster.podspec.lifecycle import backoff_delay, exit_status, should_restart
from devcluster.podspec.probes import ProbeSpec, parse_probe
from devcluster.podspec.volumes import PathRewriter

if TYPE_CHECKING:
    from devcluster.kubelet.node import Kubelet
    from devcluster.kubelet.pod import Pod

log = logging.getLogger(__name__)


TERMINATION_MESSAGE_LIMIT = 4096  # bytes, as the kubelet caps it
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


# How long one cancellation of the probe task may take before it is cancelled again.
RECANCEL_SECONDS = 0.5


async def cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it to end, cancelling again if a cancellation was lost.

    Python 3.11's `asyncio.wait_for` returns the inner result instead of raising when
    the outer task is cancelled just as the inner call completes (fixed in 3.12). A probe
    timed with it swallows the cancellation when the container's process exits while a
    probe is in flight, and that probe loop would then run, and the container stay
    running in the pod's status, forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


def termination_message_path(container: JSON) -> str:
    return str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)


def termination_message(file: Path | None, container: JSON, log_path: Path, code: int) -> str:
    """What the container wrote to its termination message file (or, with
    FallbackToLogsOnError and a failure, the tail of its log), capped like Kubernetes."""
    text = ""
    if file is not None and file.is_file():
        text = file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode("utf-8", "replace")
    if (
        not text
        and code != 0
        and container.get("terminationMessagePolicy") == ("FallbackToLogsOnError")
    ):
        with contextlib.suppress(OSError):
            lines = log_path.read_bytes().decode("utf-8", "replace").splitlines()[-80:]
            text = "\n".join(lines)[-2048:]
    return text


@dataclass
class ContainerConfig:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    rewrite: PathRewriter
    notes: list[str] = field(default_factory=list)
    termination_file: Path | None = None


class Container:
    """One container of a pod: its runs, restarts, probes and status."""

    def __init__(self, pod: Pod, spec: JSON, init: bool) -> None:
        self.pod = pod
        self.spec = spec
        self.init = init
        self.name = str(spec.get("name", ""))
        self.image = str(spec.get("image", ""))
        self.restart_count = 0
        self.state: JSON = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: JSON = {}
        self.ready = False
        self.started = False
        self.container_id: str | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.pgid: int | None = None
        self.marker = ""
        self.exited = asyncio.Event()
        self.exited.set()
        self.has_run = False
        self.done = False
        self.failures = 0
        self.config_failures = 0
        self.probes: dict[str, ProbeSpec | None] = {
            "startup": parse_probe("startup", spec.get("startupProbe"), spec),
            "liveness": parse_probe("liveness", spec.get("livenessProbe"), spec),
            "readiness": parse_probe("readiness", spec.get("readinessProbe"), spec),
        }
        self.cfg: ContainerConfig | None = None

    @property
    def kubelet(self) -> Kubelet:
        return self.pod.kubelet

    def status(self) -> JSON:
        st: JSON = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": self.image,
            "started": self.started,
        }
        if self.container_id:
            st["containerID"] = self.container_id
        return st

    def restore(self, prev: JSON) -> None:
        """Take over the status a previous kubelet wrote (its processes are gone)."""
        self.restart_count = int(prev.get("restartCount") or 0)
        state = prev.get("state") or {}
        last = prev.get("lastState") or {}
        policy = self.pod.restart_policy
        lost: JSON = {
            "terminated": {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the kubelet restarted",
                "startedAt": (state.get("running") or {}).get("startedAt"),
                "finishedAt": rfc3339(time.time()),
            }
        }
        if "terminated" in state:
            code = int(state["terminated"].get("exitCode", 0))
            restart = (
                (code != 0 and policy != "Never") if self.init else should_restart(policy, code)
            )
            self.state = state
            self.has_run = True
            self.done = not restart
            self.failures = 1
        elif "running" in state:
            self.has_run = True
            self.state = lost
            restart = policy != "Never"
            self.done = not restart
            self.failures = 1
        elif "terminated" in last:
            self.has_run = True
            self.state = last
            self.failures = 1
        if self.has_run and not self.done:
            self.last_state = self.state
        elif "terminated" in last:
            self.last_state = last

    def mark(self) -> None:
        self.pod.mark()

    # -- the run loop ------------------------------------------------------------------

    async def run(self) -> bool:
        """Run (and restart) until the container is done; True if its last run succeeded."""
        policy = self.pod.restart_policy
        while True:
            if self.done or self.pod.stopping.is_set():
                return exit_code_of(self.state) == 0
            if self.has_run:
                delay = backoff_delay(
                    self.failures, self.kubelet.backoff_base, self.kubelet.backoff_max
                )
                if delay > 0:
                    msg = (
                        f"back-off {delay:g}s restarting failed container={self.name} "
                        f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})"
                    )
                    self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
                    self.mark()
                    self.pod.event(
                        "Warning",
                        "BackOff",
                        f"Back-off restarting failed container {self.name}",
                        self,
                    )
                    if await self.pod.wait_stopping(delay):
                        return False
            try:
                cfg = await self.pod.container_config(self)
            except (ConfigError, ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                message = (
                    str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                )
                self.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": message}
                }
                self.mark()
                if self.config_failures == 0:
                    self.pod.event("Warning", "Failed", f"Error: {message}", self)
                self.config_failures += 1
                delay = min(
                    self.kubelet.backoff_max,
                    self.kubelet.backoff_base * 2 ** min(self.config_failures - 1, 10),
                )
                if await self.pod.wait_stopping(delay):
                    return False
                continue
            self.config_failures = 0
            if self.pod.stopping.is_set():
                return False
            started = time.time()
            term = await self._run_once(cfg)
            finished = time.time()
            self.state = {"terminated": term}
            self.ready = False
            self.started = False
            self.mark()
            code = int(term["exitCode"])
            if self.pod.stopping.is_set():
                return code == 0
            restart = (
                (code != 0 and policy != "Never") if self.init else should_restart(policy, code)
            )
            if not restart:
                self.done = True
                return code == 0
            self.last_state = self.state
            if finished - started >= self.kubelet.backoff_reset:
                self.failures = 0
            self.failures += 1

    async def _run_once(self, cfg: ContainerConfig) -> JSON:
        """Start the process once and wait for it; the `terminated` state it ended in."""
        kubelet = self.kubelet
        pod = self.pod
        log_path = paths.container_log_file(
            kubelet.state_dir, pod.namespace, pod.name, pod.uid, self.name
        )
        prev_path = paths.previous_log_file(
            kubelet.state_dir, pod.namespace, pod.name, pod.uid, self.name
        )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.has_run:
            self.restart_count += 1
            if log_path.exists():
                os.replace(log_path, prev_path)
        self.has_run = True
        if cfg.termination_file is not None:
            cfg.termination_file.unlink(missing_ok=True)  # a message is per run
        self.marker = f"{pod.uid}/{self.name}/{self.restart_count}"
        env = dict(cfg.env)
        env[MARKER_ENV] = self.marker
        env[STATE_ENV] = str(kubelet.state_dir)
        self.cfg = cfg
        started_at = rfc3339(time.time())
        pod.event(
            "Normal", "Pulled", f'Container image "{self.image}" already present on machine', self
        )
        pod.event("Normal", "Created", f"Created container {self.name}", self)
        with open(log_path, "ab") as logf:
            for note in cfg.notes:
                logf.write(f"devcluster: {note}\n".encode())
            logf.flush()
            try:
                proc = await asyncio.create_subprocess_exec(
                    cfg.argv[0],
                    *cfg.argv[1:],
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=cfg.cwd,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                message = start_error_message(cfg.argv[0], exc)
                logf.write(f"devcluster: {message}\n".encode())
                log.warning(
                    "pod %s/%s container %s: %s", pod.namespace, pod.name, self.name, message
                )
                pod.event("Warning", "Failed", f"Error: {message}", self)
                return {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": message,
                    "startedAt": started_at,
                    "finishedAt": rfc3339(time.time()),
                }
        self.proc = proc
        self.pgid = proc.pid
        LIVE_GROUPS.add(proc.pid)
        self.exited.clear()
        self.container_id = f"{RUNTIME}://{proc.pid}"
        self.state = {"running": {"startedAt": started_at}}
        self.started = self.probes["startup"] is None
        self.ready = self.started and self.probes["readiness"] is None
        self.mark()
        pod.event("Normal", "Started", f"Started container {self.name}", self)
        if pod.stopping.is_set():  # torn down while starting: no grace to give
            signal_group(proc.pid, signal.SIGKILL)
        probe_task = asyncio.create_task(probe_loop(self, cfg), name=f"probes {self.marker}")
        try:
            rc = await proc.wait()
        finally:
            await cancel_until_done(probe_task)
            signal_group(proc.pid, signal.SIGKILL)
            LIVE_GROUPS.discard(proc.pid)
            self.proc = None
        try:
            await asyncio.to_thread(kill_container_sync, None, self.marker)
        finally:
            self.exited.set()
        code, sig = exit_status(rc)
        term: JSON = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": rfc3339(time.time()),
            "containerID": self.container_id,
        }
        if sig is not None:
            term["signal"] = sig
        message = await asyncio.to_thread(
            termination_message, cfg.termination_file, self.spec, log_path, code
        )
        if message:
            term["message"] = message
        return term

    # -- termination -------------------------------------------------------------------

    async def terminate(self, grace: float, *, pre_stop: bool = True) -> None:
        """preStop hook, SIGTERM to the process group, SIGKILL after `grace` seconds."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        if pre_stop and hook and self.cfg is not None and grace > 0:
            try:
                await asyncio.wait_for(run_handler(self, hook, self.cfg), timeout=grace)
            except (TimeoutError, Exception) as exc:
                log.info("%s: preStop hook of %s: %s", self.pod.key, self.name, exc)
        signal_group(proc.pid, signal.SIGTERM)
        remaining = max(0.0, deadline - loop.time())
        try:
            await asyncio.wait_for(self.exited.wait(), timeout=remaining)
            return
        except TimeoutError:
            pass
        await asyncio.to_thread(kill_container_sync, proc.pid, self.marker)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited.wait(), timeout=10)


def exit_code_of(state: JSON) -> int | None:
    term = state.get("terminated")
    return int(term.get("exitCode", 0)) if isinstance(term, dict) else None
