"""The devcluster kubelet: runs the pods bound to its node as local processes.

It is a plain HTTP client of the Kubernetes REST API (`api_url`): it lists and watches
the pods with `spec.nodeName=<node_name>` in all namespaces, runs their containers,
writes `status` through the status subresource (JSON merge patch) and removes deleted
pods once their processes are gone. It shares nothing else with the API server, so it
would drive a real API server just the same.

Processes
---------
Each container is a process of the current Python environment: the image is recorded
in the status, never pulled. argv is `command + args` (`args` alone when `command` is
missing: devcluster has no image entrypoints), with `$(VAR)` expanded as Kubernetes
does. A first word `python`, `python3` or `python3.X` runs `sys.executable`, and a bare
name found next to it (the virtual environment's `bin`, e.g. `torchrun`) runs from
there; other names are looked up on PATH. The process starts in its own session
(`start_new_session=True`), stdin from /dev/null, stdout and stderr appended to
`paths.container_log_file()`; on a restart the previous run's log moves to
`paths.previous_log_file()` (for `kubectl logs --previous`). The environment is the
kubelet's own (PATH, HOME, PYTHONPATH, ...) and `extra_env`, plus what the container
declares: literal values, fieldRef (`metadata.name|namespace|uid|labels['x']|
annotations['x']`,
`spec.nodeName`, `spec.serviceAccountName`, `status.podIP`, `status.hostIP`),
resourceFieldRef, configMapKeyRef, secretKeyRef, envFrom; the service link variables
(`<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, `<NAME>_SERVICE_PORT_<PORT>`) of the
services in the pod's namespace when the container starts; `KUBERNETES_SERVICE_HOST` and
`_PORT` pointing at the API server; and `HOSTNAME` (the pod's name). `workingDir`
defaults to a per-container directory in the pod's directory; a workingDir that does
not exist on this machine (and is not under a volume mount) falls back to it, with a
note in the container's log.

A container is all the processes started from it: its process group, plus any
descendant that left the group (torchrun starts its workers in new sessions), found by
the `DEVCLUSTER_CONTAINER_ID` variable every process inherits. When the main process
exits, whatever is left of the container gets SIGKILL, as a container runtime does when
PID 1 exits. Termination sends SIGTERM to the process group (after the preStop hook,
if any), waits up to the grace period, then SIGKILLs all of the container's processes.
Processes left behind by a kubelet that died without stopping (same state directory)
are killed when the next kubelet starts. (Finding descendants by their environment
needs Linux's /proc; elsewhere only the process group is signalled.)

Networking
----------
Each pod gets its own loopback address from `pod_cidr` (default 127.10.0.0/16; all of
127/8 reaches `lo` on Linux; handed out round robin from a random start, so that two
devclusters on one machine rarely collide), reported as `status.podIP`/`podIPs` and
released when the pod is gone; `hostNetwork` pods get the host IP (127.0.0.1). Programs must bind to
their pod IP (learn it with a fieldRef to `status.podIP`), not to 0.0.0.0: every pod
shares the machine's ports. Probes and the service proxy connect to podIP:port.
Service names do not resolve (no DNS); use the service environment variables.

Volumes (how devcluster stands in for mounts)
---------------------------------------------
There is no mount namespace, so a volumeMount's `mountPath` cannot exist as such. Each
volume is a local directory: emptyDir, configMap, secret, downwardAPI and projected
volumes under `paths.volume_dir()` (configMap and secret files written from the data at
pod start, secret data base64-decoded, `items` key -> path and modes honoured, secret
files mode 0600 unless `defaultMode` says otherwise); persistentVolumeClaim under
`paths.claim_dir()` (it outlives pods); hostPath as is. The kubelet REWRITES each mount
path (plus its `subPath`) to that directory in the container's command, args, env values
and workingDir, on whole path tokens, longest mount path first (see
`podspec.PathRewriter`): with a volume `data` mounted at `/data`, the argument
`--out=/data/ckpt` becomes `--out=<state>/pods/<ns>_<pod>_<uid>/volumes/data/ckpt`.
It also exports `DEVCLUSTER_MOUNT_<VOLUME>` (upper case, non-alphanumerics as `_`) with
the local directory of each volume the container mounts. Paths a program hard-codes or
reads from files are not rewritten; `readOnly` is not enforced.

Probes, restarts, status
------------------------
startupProbe, livenessProbe and readinessProbe (httpGet to the pod IP, tcpSocket, exec
run locally with the container's environment; grpc probes are not supported: they fail
with a message saying so) with Kubernetes' defaults and thresholds. Ready and
ContainersReady follow readiness (no readiness probe: ready once running and started); a
failed liveness or startup probe kills the container, which restarts per restartPolicy.
terminationMessagePath: the file a container writes there (the path is rewritten like a
mount) becomes `terminated.message`, capped at 4 KiB; FallbackToLogsOnError falls back to
the log's tail on failure. restartPolicy Always, OnFailure and Never apply with the
kubelet's back-off: the first restart is immediate, then `backoff_base` doubling up to
`backoff_max` (Kubernetes: 10 s and 300 s; devcluster defaults to 1 s and 30 s), reset
after a run of `2 * backoff_max`.
Init containers run first, in order, each to completion. Container states (waiting
ContainerCreating / PodInitializing / CrashLoopBackOff / CreateContainerConfigError,
running, terminated with exitCode, signal, reason Completed / Error / StartError),
lastState, restartCount, the pod phase (Pending, Running, Succeeded, Failed) and the
PodReadyToStartContainers, Initialized, ContainersReady and Ready conditions are
reported as the kubelet does. A command that cannot start (no such executable) ends in
`terminated` with reason StartError (exit code 128) and the OS error, in the status and
in the container's log. The kubelet also posts Events (Pulled, Created, Started,
Killing, Unhealthy, BackOff, Failed, FailedMount, DeadlineExceeded) for `kubectl
describe`; they are best effort (dropped when the API cannot take them).

Deletion: when a pod gets a deletionTimestamp, the preStop hooks run, then SIGTERM,
SIGKILL after `deletionGracePeriodSeconds`, a last status, and `DELETE ...
?gracePeriodSeconds=0` with a uid precondition. A pod that vanishes from the API
(force-deleted) has its processes killed the same way, with the grace period capped at
`stop_timeout`. `activeDeadlineSeconds` fails the pod with reason
DeadlineExceeded.

Simulate mode (`simulate=True`): no processes. Pods go straight to Running and Ready
with a pod IP, and are deleted at once when they get a deletionTimestamp. Status
writes and deletions go through bounded, batched queues: thousands of pods need no
thread and no task per pod.

Robustness: every task catches and logs its exceptions, so one pod never affects
another; API errors back off and retry; watches resume or relist (see
`devcluster.informer`), so the kubelet survives an API server restart.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import contextlib
import errno
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from devcluster import paths
from devcluster.informer import ApiError, Informer, RestClient
from devcluster.podspec import (
    JSON,
    RUNTIME,
    ConfigError,
    IPAllocator,
    PathRewriter,
    ProbeSpec,
    Sources,
    backoff_delay,
    compute_phase,
    container_argv,
    container_env,
    container_mounts,
    exit_status,
    kubernetes_service_env,
    mount_env_name,
    parse_probe,
    parse_time,
    pod_conditions,
    qos_class,
    referenced_sources,
    resolve_program,
    rfc3339,
    service_env,
    should_restart,
    volume_dirs,
    volume_files,
)

log = logging.getLogger(__name__)

#: Every process of a container inherits these; they find stray processes.
MARKER_ENV = "DEVCLUSTER_CONTAINER_ID"
STATE_ENV = "DEVCLUSTER_STATE_DIR"

# Process groups alive right now, killed at interpreter exit if stop() never ran.
_LIVE_GROUPS: set[int] = set()


@atexit.register
def _kill_live_groups() -> None:  # pragma: no cover - exit path
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


# --------------------------------------------------------------------------------------
# Process helpers


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


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_container_sync(pgid: int | None, marker: str) -> None:
    """SIGKILL a container's process group and every process carrying its marker."""
    if pgid is not None:
        _signal_group(pgid, signal.SIGKILL)
    for pid in _find_marked([f"{MARKER_ENV}={marker}".encode()]):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _reap_strays_sync(state_dir: str) -> int:
    """Kill the processes of containers a previous kubelet on this state dir left behind."""
    pids = _find_marked([f"{STATE_ENV}={state_dir}".encode()])
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _start_error_message(argv0: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename in (argv0, None) and "/" not in argv0:
        detail = "executable file not found in $PATH"
    elif exc.errno == errno.ENOENT and exc.filename not in (argv0, None):
        detail = f"chdir to {exc.filename}: no such file or directory"
    else:
        detail = (exc.strerror or str(exc)).lower()
    return f'failed to start container process: exec: "{argv0}": {detail}'


def _meta(obj: JSON) -> JSON:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _spec(obj: JSON) -> JSON:
    s = obj.get("spec")
    return s if isinstance(s, dict) else {}


def _status(obj: JSON) -> JSON:
    s = obj.get("status")
    return s if isinstance(s, dict) else {}


def _grace(obj: JSON, default: float = 30.0) -> float:
    meta = _meta(obj)
    for value in (
        meta.get("deletionGracePeriodSeconds"),
        _spec(obj).get("terminationGracePeriodSeconds"),
    ):
        if isinstance(value, int | float):
            return max(0.0, float(value))
    return default


# --------------------------------------------------------------------------------------
# Batched work queues


class _BatchQueue:
    """Keys to process (deduplicated), handled concurrently in batches with retries.

    `work(key)` returns True when done, False to retry the key after a back-off.
    """

    def __init__(self, name: str, work: Callable[[str], Awaitable[bool]], concurrency: int) -> None:
        self.name = name
        self.work = work
        self.concurrency = concurrency
        self.pending: set[str] = set()
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.delay = 0.0

    def add(self, key: str) -> None:
        self.pending.add(key)
        self.idle.clear()
        self.wakeup.set()

    async def run(self) -> None:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(key: str) -> bool:
            async with sem:
                try:
                    return await self.work(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: %s failed", self.name, key)
                    return False

        while True:
            if not self.pending:
                self.idle.set()
                await self.wakeup.wait()
            self.wakeup.clear()
            await asyncio.sleep(0.01)  # coalesce bursts
            batch, self.pending = self.pending, set()
            keys = sorted(batch)
            results = await asyncio.gather(*(one(k) for k in keys))
            failed = [k for k, ok in zip(keys, results, strict=True) if not ok]
            if failed:
                self.pending.update(failed)
                self.delay = min(5.0, max(0.2, self.delay * 2))
                await asyncio.sleep(self.delay)
            else:
                self.delay = 0.0


# --------------------------------------------------------------------------------------
# Pods


class _PodBase(abc.ABC):
    """What simulated and real pods share; each renders its own status."""

    def __init__(self, kubelet: Kubelet, obj: JSON) -> None:
        self.kubelet = kubelet
        self.obj = obj
        meta = _meta(obj)
        self.uid = str(meta.get("uid", ""))
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta.get("name", ""))
        self.ip: str | None = None
        self._owns_ip = False
        self.start_time = _status(obj).get("startTime") or rfc3339(time.time())
        self.last_written: JSON | None = None

    @property
    def api_path(self) -> str:
        return f"/api/v1/namespaces/{quote(self.namespace)}/pods/{quote(self.name)}"

    @abc.abstractmethod
    def render_status(self) -> JSON:
        """The pod's status as the kubelet reports it."""

    def _assign_ip(self) -> None:
        if self.ip is not None:
            return
        if _spec(self.obj).get("hostNetwork"):
            self.ip = self.kubelet.host_ip
        else:
            self.ip = self.kubelet.ips.allocate(_status(self.obj).get("podIP"))
            self._owns_ip = True

    def release_ip(self) -> None:
        if self.ip is not None and self._owns_ip:
            self.kubelet.ips.release(self.ip)
        self._owns_ip = False
        self.ip = None

    def _base_status(self) -> JSON:
        ip = self.ip or ""
        st: JSON = {
            "hostIP": self.kubelet.host_ip,
            "hostIPs": [{"ip": self.kubelet.host_ip}],
            "startTime": self.start_time,
            "qosClass": _status(self.obj).get("qosClass") or qos_class(self.obj),
        }
        if ip:
            st["podIP"] = ip
            st["podIPs"] = [{"ip": ip}]
        return st

    def _previous_conditions(self) -> list[JSON]:
        """Managed conditions as last written (the watch may lag), others as the API has them."""
        api = [c for c in _status(self.obj).get("conditions") or [] if isinstance(c, dict)]
        if self.last_written is None:
            return api
        mine = list(self.last_written.get("conditions") or [])
        mine_types = {c.get("type") for c in mine}
        return mine + [c for c in api if c.get("type") not in mine_types]


class _SimPod(_PodBase):
    """A simulated pod: Running and Ready at once, no processes."""

    def __init__(self, kubelet: Kubelet, obj: JSON) -> None:
        super().__init__(kubelet, obj)
        self._assign_ip()

    def render_status(self) -> JSON:
        now = time.time()
        spec = _spec(self.obj)
        started = self.start_time

        def cstatus(c: JSON, init: bool) -> JSON:
            name = str(c.get("name", ""))
            state: JSON
            if init:
                state = {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": started,
                        "finishedAt": started,
                        "containerID": f"{RUNTIME}://sim-{self.uid[:8]}-{name}",
                    }
                }
            else:
                state = {"running": {"startedAt": started}}
            return {
                "name": name,
                "state": state,
                "lastState": {},
                "ready": not init,
                "restartCount": 0,
                "image": str(c.get("image", "")),
                "imageID": str(c.get("image", "")),
                "containerID": f"{RUNTIME}://sim-{self.uid[:8]}-{name}",
                "started": not init,
            }

        inits = [c for c in spec.get("initContainers") or [] if isinstance(c, dict)]
        apps = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
        init_st = {str(c.get("name")): cstatus(c, True) for c in inits}
        app_st = {str(c.get("name")): cstatus(c, False) for c in apps}
        st = self._base_status()
        st["phase"] = "Running"
        st["conditions"] = pod_conditions(
            previous=self._previous_conditions(),
            sandbox_ready=True,
            init_names=list(init_st),
            init_statuses=init_st,
            names=list(app_st),
            statuses=app_st,
            phase="Running",
            readiness_gates=[str(g.get("conditionType")) for g in spec.get("readinessGates") or []],
            now=now,
        )
        st["containerStatuses"] = list(app_st.values())
        if init_st:
            st["initContainerStatuses"] = list(init_st.values())
        return st


TERMINATION_MESSAGE_LIMIT = 4096  # bytes, as the kubelet caps it
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


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
class _Config:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    rewrite: PathRewriter
    notes: list[str] = field(default_factory=list)
    termination_file: Path | None = None


class _Container:
    """One container of a pod: its runs, restarts, probes and status."""

    def __init__(self, pod: _Pod, spec: JSON, init: bool) -> None:
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
        self.cfg: _Config | None = None

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
                return _exit_code_of(self.state) == 0
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

    async def _run_once(self, cfg: _Config) -> JSON:
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
                message = _start_error_message(cfg.argv[0], exc)
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
        _LIVE_GROUPS.add(proc.pid)
        self.exited.clear()
        self.container_id = f"{RUNTIME}://{proc.pid}"
        self.state = {"running": {"startedAt": started_at}}
        self.started = self.probes["startup"] is None
        self.ready = self.started and self.probes["readiness"] is None
        self.mark()
        pod.event("Normal", "Started", f"Started container {self.name}", self)
        if pod.stopping.is_set():  # torn down while starting: no grace to give
            _signal_group(proc.pid, signal.SIGKILL)
        probe_task = asyncio.create_task(self._probe_loop(cfg), name=f"probes {self.marker}")
        try:
            rc = await proc.wait()
        finally:
            probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await probe_task
            _signal_group(proc.pid, signal.SIGKILL)
            _LIVE_GROUPS.discard(proc.pid)
            self.proc = None
        try:
            await asyncio.to_thread(_kill_container_sync, None, self.marker)
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
                await asyncio.wait_for(self._run_handler(hook, self.cfg), timeout=grace)
            except (TimeoutError, Exception) as exc:
                log.info("%s: preStop hook of %s: %s", self.pod.key, self.name, exc)
        _signal_group(proc.pid, signal.SIGTERM)
        remaining = max(0.0, deadline - loop.time())
        try:
            await asyncio.wait_for(self.exited.wait(), timeout=remaining)
            return
        except TimeoutError:
            pass
        await asyncio.to_thread(_kill_container_sync, proc.pid, self.marker)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited.wait(), timeout=10)

    # -- probes ------------------------------------------------------------------------

    async def _probe_loop(self, cfg: _Config) -> None:
        try:
            startup = self.probes["startup"]
            if startup is not None:
                if not await self._startup(startup, cfg):
                    return
                self.started = True
                if self.probes["readiness"] is None:
                    self.ready = True
                self.mark()
            loops = [
                self._periodic(p, cfg)
                for p in (self.probes["liveness"], self.probes["readiness"])
                if p is not None
            ]
            if loops:
                await asyncio.gather(*loops)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: probes of %s failed", self.pod.key, self.name)

    async def _startup(self, probe: ProbeSpec, cfg: _Config) -> bool:
        await asyncio.sleep(probe.initial_delay)
        failures = 0
        while True:
            ok, msg = await self._probe(probe, cfg)
            if ok:
                return True
            failures += 1
            if failures >= probe.failure_threshold:
                await self._probe_kill(probe, msg)
                return False
            await asyncio.sleep(probe.period)

    async def _periodic(self, probe: ProbeSpec, cfg: _Config) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(probe.initial_delay)
        successes = failures = 0
        while True:
            t0 = loop.time()
            ok, msg = await self._probe(probe, cfg)
            if ok:
                successes += 1
                failures = 0
            else:
                failures += 1
                successes = 0
            if probe.kind == "readiness":
                if ok and not self.ready and successes >= probe.success_threshold:
                    self.ready = True
                    self.mark()
                elif not ok and failures >= probe.failure_threshold and self.ready:
                    self.ready = False
                    self.mark()
                if not ok and failures == probe.failure_threshold:
                    self.pod.event("Warning", "Unhealthy", f"Readiness probe failed: {msg}", self)
            elif not ok and failures >= probe.failure_threshold:
                await self._probe_kill(probe, msg)
                return
            await asyncio.sleep(max(0.0, probe.period - (loop.time() - t0)))

    async def _probe_kill(self, probe: ProbeSpec, msg: str) -> None:
        kind = probe.kind.capitalize()
        self.pod.event("Warning", "Unhealthy", f"{kind} probe failed: {msg}", self)
        self.pod.event(
            "Normal",
            "Killing",
            f"Container {self.name} failed {probe.kind} probe, will be restarted",
            self,
        )
        grace = (
            probe.termination_grace
            if probe.termination_grace is not None
            else float(_spec(self.pod.obj).get("terminationGracePeriodSeconds", 30) or 0)
        )
        # Run the termination outside this (probe) task: run() cancels it on exit.
        task = self.kubelet.spawn(self.terminate(grace), f"terminate {self.marker}")
        await asyncio.shield(task)

    async def _probe(self, probe: ProbeSpec, cfg: _Config) -> tuple[bool, str]:
        if probe.error:
            return False, probe.error
        try:
            if probe.handler == "grpc":
                # Never report a result we did not measure: the probe fails visibly.
                return (
                    False,
                    "grpc probes are not supported by devcluster; use httpGet, tcpSocket or exec",
                )
            return await asyncio.wait_for(self._handle(probe, cfg), timeout=probe.timeout)
        except TimeoutError:
            return False, f"timeout after {probe.timeout:g}s"
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"

    async def _handle(self, probe: ProbeSpec, cfg: _Config) -> tuple[bool, str]:
        host = probe.host or self.pod.ip or self.kubelet.host_ip
        if probe.handler == "httpGet":
            scheme = "https" if probe.scheme == "HTTPS" else "http"
            url = f"{scheme}://{host}:{probe.port}{probe.path}"
            headers = {"User-Agent": "kube-probe/1.33", "Accept": "*/*"}
            headers.update(dict(probe.headers))
            async with self.kubelet.probe_session.get(
                url, headers=headers, allow_redirects=False, ssl=False
            ) as resp:
                ok = 200 <= resp.status < 400
                return ok, f"HTTP probe failed with statuscode: {resp.status}"
        if probe.handler == "tcpSocket":
            _, writer = await asyncio.open_connection(host, probe.port)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return True, ""
        if probe.handler == "exec":
            return await self._exec(list(probe.command), cfg)
        return False, "probe has no handler"

    async def _exec(self, command: list[str], cfg: _Config) -> tuple[bool, str]:
        argv = [cfg.rewrite(x) for x in command]
        argv[0] = resolve_program(argv[0], cfg.env.get("PATH"))
        env = dict(cfg.env)
        env[MARKER_ENV] = self.marker
        env[STATE_ENV] = str(self.kubelet.state_dir)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cfg.cwd,
            env=env,
            start_new_session=True,
        )
        try:
            out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                _signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), timeout=5)
        text = out.decode(errors="replace").strip()[-1024:]
        return proc.returncode == 0, text or f"command exited with {proc.returncode}"

    async def _run_handler(self, handler: JSON, cfg: _Config) -> None:
        """A lifecycle hook (exec or httpGet)."""
        if handler.get("exec"):
            await self._exec([str(x) for x in handler["exec"].get("command") or []], cfg)
        elif handler.get("httpGet"):
            probe = parse_probe("liveness", {"httpGet": handler["httpGet"]}, self.spec)
            if probe is not None and probe.error is None:
                await self._handle(probe, cfg)
        elif handler.get("sleep"):
            await asyncio.sleep(float(handler["sleep"].get("seconds", 0)))


def _exit_code_of(state: JSON) -> int | None:
    term = state.get("terminated")
    return int(term.get("exitCode", 0)) if isinstance(term, dict) else None


class _Pod(_PodBase):
    """A pod whose containers run as local processes."""

    def __init__(self, kubelet: Kubelet, obj: JSON) -> None:
        super().__init__(kubelet, obj)
        spec = _spec(obj)
        self.restart_policy = str(spec.get("restartPolicy") or "Always")
        self.inits = [_Container(self, c, True) for c in spec.get("initContainers") or []]
        self.apps = [_Container(self, c, False) for c in spec.get("containers") or []]
        if self.inits:
            for c in self.apps:
                c.state = {"waiting": {"reason": "PodInitializing"}}
        self.stopping = asyncio.Event()
        self.sandbox_ready = False
        self.terminal = False  # deleted, gone or past its deadline: nothing runs any more
        self.final_phase: str | None = None
        self.reason: str | None = None
        self.message: str | None = None
        self.dirs: dict[str, Path] = {}
        self.deleting = False
        self.gone = False
        self.task: asyncio.Task[None] | None = None
        self._teardown: asyncio.Task[None] | None = None
        self._volume_event_sent = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def containers(self) -> list[_Container]:
        return self.inits + self.apps

    def mark(self) -> None:
        self.kubelet.mark_dirty(self.uid)

    def event(self, etype: str, reason: str, message: str, c: _Container | None = None) -> None:
        field = None
        if c is not None:
            field = f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}"
        self.kubelet.post_event(self, etype, reason, message, field)

    async def wait_stopping(self, seconds: float) -> bool:
        """Sleep; True (early) when the pod is being torn down."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.task = self.kubelet.spawn(self._run(), f"pod {self.key}")
        deadline = _spec(self.obj).get("activeDeadlineSeconds")
        if isinstance(deadline, int) and deadline > 0:
            self.kubelet.spawn(self._deadline(deadline), f"deadline {self.key}")

    def update(self, obj: JSON) -> None:
        self.obj = obj
        if _meta(obj).get("deletionTimestamp") and not self.deleting:
            self.deleting = True
            self._teardown = self.kubelet.spawn(self._delete(), f"delete {self.key}")
        elif _spec(obj).get("readinessGates"):
            self.mark()

    def vanished(self, obj: JSON) -> None:
        """The pod object is gone from the API: kill what runs, free the IP and files."""
        self.gone = True
        self.obj = obj
        self.kubelet.spawn(self._cleanup(), f"cleanup {self.key}")

    async def _run(self) -> None:
        status = _status(self.obj)
        phase = status.get("phase")
        self._restore(status)
        if phase in ("Succeeded", "Failed"):
            # Finished before this kubelet started (devcluster restarted): run nothing.
            self.terminal = True
            self.final_phase = str(phase)
            ip = status.get("podIP") or None
            ips = self.kubelet.ips
            if ip and ip in ips and ip not in ips.in_use:
                self.ip = ips.allocate(ip)  # held until the pod is gone, as a running pod's
                self._owns_ip = True
            else:
                self.ip = ip
            return
        self._assign_ip()
        self.mark()
        if not await self._prepare_volumes():
            return
        self.sandbox_ready = True
        self.mark()
        for c in self.inits:
            if c.done and _exit_code_of(c.state) == 0:
                continue
            if not await c.run():
                if not self.stopping.is_set():
                    self.final_phase = "Failed"
                    self.terminal = True
                    self.mark()
                return
        for c in self.apps:
            if "waiting" in c.state and c.state["waiting"].get("reason") == "PodInitializing":
                c.state = {"waiting": {"reason": "ContainerCreating"}}
        self.mark()
        await asyncio.gather(*(c.run() for c in self.apps))
        if not self.stopping.is_set():
            self.terminal = True  # every container finished for good
            self.mark()

    def _restore(self, status: JSON) -> None:
        prev = {
            str(s.get("name")): s
            for key in ("initContainerStatuses", "containerStatuses")
            for s in status.get(key) or []
            if isinstance(s, dict)
        }
        for c in self.containers:
            if c.name in prev:
                c.restore(prev[c.name])

    async def _prepare_volumes(self) -> bool:
        """Create and fill the volume directories; retry until they can be (or teardown)."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                await self._write_volumes()
                if self._volume_event_sent:
                    for c in self.containers:
                        if "waiting" in c.state:
                            c.state = {"waiting": {"reason": "ContainerCreating"}}
                return True
            except (ConfigError, ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                message = f"MountVolume.SetUp failed: {exc}"
                for c in self.containers:
                    if "waiting" in c.state:
                        c.state = {"waiting": {"reason": "ContainerCreating", "message": message}}
                self.mark()
                if not self._volume_event_sent:
                    self.event("Warning", "FailedMount", message)
                    self._volume_event_sent = True
                attempt += 1
                delay = min(
                    self.kubelet.backoff_max, self.kubelet.backoff_base * 2 ** min(attempt - 1, 10)
                )
                if await self.wait_stopping(delay):
                    return False
        return False

    async def _write_volumes(self) -> None:
        self.dirs = volume_dirs(self.obj, self.kubelet.state_dir)
        sources = await self.kubelet.fetch_sources(self.namespace, self.obj)
        plan: list[tuple[Path, JSON, dict[str, tuple[bytes, int]] | None]] = []
        for v in _spec(self.obj).get("volumes") or []:
            name = str(v.get("name", ""))
            if name not in self.dirs:
                continue
            files = volume_files(
                v, self.obj, sources, pod_ip=self.ip or "", host_ip=self.kubelet.host_ip
            )
            plan.append((self.dirs[name], v, files))
        await asyncio.to_thread(_materialize_volumes, plan)

    async def container_config(self, c: _Container) -> _Config:
        """Everything needed to start container `c` now: argv, environment, directory."""
        kubelet = self.kubelet
        sources = await kubelet.fetch_sources(self.namespace, self.obj)
        svc_env: dict[str, str] = {}
        if _spec(self.obj).get("enableServiceLinks", True) is not False:
            svc_env.update(service_env(await kubelet.list_services(self.namespace)))
        svc_env.update(kubelet.kubernetes_env)
        declared = container_env(
            self.obj,
            c.spec,
            pod_ip=self.ip or "",
            host_ip=kubelet.host_ip,
            sources=sources,
            services_env=svc_env,
        )
        mounts = container_mounts(c.spec, self.dirs)
        # The termination message file is a per-container file "mounted" at its path.
        term_file = paths.termination_message_file(
            kubelet.state_dir, self.namespace, self.name, self.uid, c.name
        )
        rewrite = PathRewriter([*mounts, (termination_message_path(c.spec), term_file)])
        argv = [rewrite(a) for a in container_argv(c.spec, declared)]
        env = dict(os.environ)
        env.update(kubelet.extra_env)
        env["HOSTNAME"] = str(_spec(self.obj).get("hostname") or self.name)
        env.update({k: rewrite(v) for k, v in declared.items()})
        for m in c.spec.get("volumeMounts") or []:
            vname = str(m.get("name", ""))
            env[mount_env_name(vname)] = str(self.dirs[vname])
        argv[0] = resolve_program(argv[0], env.get("PATH"))
        notes: list[str] = []
        default_cwd = (
            paths.pod_dir(kubelet.state_dir, self.namespace, self.name, self.uid)
            / "workdir"
            / c.name
        )
        working_dir = str(c.spec.get("workingDir") or "")
        cwd = str(default_cwd)
        if working_dir:
            local = rewrite(working_dir)
            if Path(local).is_dir() or local != working_dir:
                cwd = local
            else:
                notes.append(
                    f"workingDir {working_dir} does not exist on this machine; using {default_cwd}"
                )
        await asyncio.to_thread(_make_dirs, [Path(cwd), term_file.parent] + [p for _, p in mounts])
        return _Config(
            argv=argv, env=env, cwd=cwd, rewrite=rewrite, notes=notes, termination_file=term_file
        )

    async def _deadline(self, seconds: int) -> None:
        start = parse_time(self.start_time) or time.time()
        if await self.wait_stopping(max(0.0, start + seconds - time.time())):
            return
        if self.terminal or self.stopping.is_set():
            return
        self.reason = "DeadlineExceeded"
        self.message = "Pod was active on the node longer than the specified deadline"
        self.event("Normal", "DeadlineExceeded", self.message)
        await self.stop_containers(_grace(self.obj))
        self.final_phase = "Failed"
        self.terminal = True
        self.mark()

    async def stop_containers(self, grace: float, *, pre_stop: bool = True) -> None:
        """Tear down: no more restarts; every running container terminated within grace."""
        self.stopping.set()
        for c in self.containers:
            if c.proc is not None:
                self.event("Normal", "Killing", f"Stopping container {c.name}", c)
        await asyncio.gather(*(c.terminate(grace, pre_stop=pre_stop) for c in self.containers))
        task = self.task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
            except TimeoutError:
                task.cancel()
            except Exception:
                pass
        for c in self.containers:
            if "waiting" in c.state or "running" in c.state:
                if "running" in c.state:
                    c.state = {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "Error",
                            "startedAt": c.state["running"].get("startedAt"),
                            "finishedAt": rfc3339(time.time()),
                        }
                    }
                c.ready = False
                c.started = False

    async def _delete(self) -> None:
        grace = _grace(self.obj)
        await self.stop_containers(grace)
        self.terminal = True
        if self.final_phase is None and not self.gone:
            await self.kubelet.write_status(self)
        await self.kubelet.delete_pod(self)

    async def _cleanup(self) -> None:
        try:
            await self.stop_containers(min(_grace(self.obj), self.kubelet.stop_timeout))
            teardown = self._teardown
            if teardown is not None and not teardown.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(teardown), timeout=30)
        finally:
            self.kubelet.forget(self)
            self.release_ip()
            if not self.kubelet.keep_pod_dirs:
                pod_dir = paths.pod_dir(self.kubelet.state_dir, self.namespace, self.name, self.uid)
                await asyncio.to_thread(shutil.rmtree, pod_dir, True)

    # -- status ------------------------------------------------------------------------

    def render_status(self) -> JSON:
        init_st = {c.name: c.status() for c in self.inits}
        app_st = {c.name: c.status() for c in self.apps}
        if self.final_phase is not None:
            phase = self.final_phase
        else:
            phase = compute_phase(
                self.restart_policy,
                list(init_st),
                init_st,
                list(app_st),
                app_st,
                terminal=self.terminal,
            )
            if phase in ("Succeeded", "Failed"):
                self.final_phase = phase  # terminal phases never change
        st = self._base_status()
        st["phase"] = phase
        st["conditions"] = pod_conditions(
            previous=self._previous_conditions(),
            sandbox_ready=self.sandbox_ready,
            init_names=list(init_st),
            init_statuses=init_st,
            names=list(app_st),
            statuses=app_st,
            phase=phase,
            readiness_gates=[
                str(g.get("conditionType")) for g in _spec(self.obj).get("readinessGates") or []
            ],
            now=time.time(),
        )
        st["containerStatuses"] = list(app_st.values())
        if init_st:
            st["initContainerStatuses"] = list(init_st.values())
        if self.reason:
            st["reason"] = self.reason
        if self.message:
            st["message"] = self.message
        return st


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


def _make_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        with contextlib.suppress(OSError):
            d.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------
# The kubelet


class Kubelet:
    """Runs the pods the API server binds to `node_name` (see the module docstring).

    Args:
        api_url: base URL of the API server, e.g. `http://127.0.0.1:6443`.
        state_dir: where logs and volumes live (`devcluster.paths`).
        node_name: the `spec.nodeName` this kubelet serves.
        simulate: mark pods Running and Ready without starting processes.
        pod_cidr: loopback range the pod IPs come from (handed out round robin from a
            random starting address; see `podspec.IPAllocator`).
        host_ip: `status.hostIP` (and the IP of hostNetwork pods).
        backoff_base, backoff_max: restart back-off (first restart immediate, then
            base doubling to max); reset after `2 * backoff_max` seconds of running.
        stop_timeout: at most this long per pod for SIGTERM to work in `stop()` (and
            when a pod vanishes from the API) before SIGKILL.
        status_concurrency: parallel status writes and deletions.
        keep_pod_dirs: keep logs and volumes of pods that are gone (default: removed).
        events: post Kubernetes Events (not in simulate mode).
        extra_env: variables every container gets on top of the kubelet's own
            environment (e.g. KUBECONFIG pointing at devcluster, since pods have no
            service-account token for in-cluster configuration); the pod's env wins.
    """

    def __init__(
        self,
        api_url: str,
        state_dir: Path,
        node_name: str = "devcluster",
        simulate: bool = False,
        *,
        pod_cidr: str = "127.10.0.0/16",
        host_ip: str = "127.0.0.1",
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        stop_timeout: float = 10.0,
        status_concurrency: int = 32,
        keep_pod_dirs: bool = False,
        events: bool = True,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.state_dir = Path(state_dir).resolve()
        self.node_name = node_name
        self.simulate = simulate
        self.host_ip = host_ip
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.backoff_reset = 2 * backoff_max
        self.stop_timeout = stop_timeout
        self.keep_pod_dirs = keep_pod_dirs
        self.events_enabled = events and not simulate
        self.extra_env = dict(extra_env or {})
        self.ips = IPAllocator(pod_cidr)
        url = urlsplit(self.api_url)
        self.kubernetes_env = kubernetes_service_env(
            url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)
        )
        self.pods: dict[str, _PodBase] = {}
        self._status_queue = _BatchQueue("pod status", self._write_status_key, status_concurrency)
        self._delete_queue = _BatchQueue("pod delete", self._delete_key, status_concurrency)
        self._events: asyncio.Queue[JSON] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        self._client: RestClient | None = None
        self._informer: Informer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._stopped = False

    # -- public ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching pods; returns at once (see `wait_synced`)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.simulate:
            n = await asyncio.to_thread(_reap_strays_sync, str(self.state_dir))
            if n:
                log.warning("killed %d processes left behind by a previous kubelet", n)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=60),
            headers={"User-Agent": "kubelet/devcluster"},  # the `client` of /metrics
        )
        self._probe_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True)
        )
        self._client = RestClient(self.api_url, self._session)
        self._informer = Informer(
            self._client,
            "/api/v1/pods",
            self._on_pod_event,
            params={"fieldSelector": f"spec.nodeName={self.node_name}"},
            name="kubelet pods",
        )
        self._events = asyncio.Queue(maxsize=1000)
        self._loops = [
            asyncio.create_task(self._status_queue.run(), name="kubelet status writer"),
            asyncio.create_task(self._delete_queue.run(), name="kubelet deleter"),
            asyncio.create_task(self._event_poster(), name="kubelet events"),
        ]
        self._informer.start()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until the first pod list has been processed."""
        assert self._informer is not None, "start() first"
        await asyncio.wait_for(self._informer.synced.wait(), timeout=timeout)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until every pending status write and deletion has been sent."""

        async def idle() -> None:
            while not (self._status_queue.idle.is_set() and self._delete_queue.idle.is_set()):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(idle(), timeout=timeout)

    async def stop(self) -> None:
        """Terminate every container (SIGTERM; SIGKILL after the pod's grace period,
        at most `stop_timeout`), then stop watching. Pods stay in the API."""
        if self._stopped:
            return
        self._stopped = True
        if self._informer is not None:
            await self._informer.stop()
        pods = [p for p in self.pods.values() if isinstance(p, _Pod)]
        if pods:
            await asyncio.gather(
                *(p.stop_containers(min(_grace(p.obj), self.stop_timeout)) for p in pods),
                return_exceptions=True,
            )
        for task in list(self._tasks) + self._loops:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._loops, return_exceptions=True)
        for p in self.pods.values():
            if isinstance(p, _Pod):
                for c in p.containers:
                    if c.pgid is not None:
                        _LIVE_GROUPS.discard(c.pgid)
        if self._session is not None:
            await self._session.close()
        if self._probe_session is not None:
            await self._probe_session.close()

    def pod_ip(self, namespace: str, name: str) -> str | None:
        """The IP this kubelet gave the pod, if it runs it."""
        for p in self.pods.values():
            if p.namespace == namespace and p.name == name:
                return p.ip
        return None

    # -- internals used by pods --------------------------------------------------------

    @property
    def client(self) -> RestClient:
        assert self._client is not None, "start() first"
        return self._client

    @property
    def probe_session(self) -> aiohttp.ClientSession:
        assert self._probe_session is not None, "start() first"
        return self._probe_session

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task whose exception is logged, never lost or fatal."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def mark_dirty(self, uid: str) -> None:
        self._status_queue.add(uid)

    def forget(self, pod: _PodBase) -> None:
        if self.pods.get(pod.uid) is pod:
            del self.pods[pod.uid]

    async def fetch_sources(self, namespace: str, pod: JSON) -> Sources:
        cms, secrets = referenced_sources(pod)
        sources = Sources()
        ns = quote(namespace)
        for name in sorted(cms):
            sources.configmaps[name] = await self._get_or_none(
                f"/api/v1/namespaces/{ns}/configmaps/{quote(name)}"
            )
        for name in sorted(secrets):
            sources.secrets[name] = await self._get_or_none(
                f"/api/v1/namespaces/{ns}/secrets/{quote(name)}"
            )
        return sources

    async def _get_or_none(self, path: str) -> JSON | None:
        try:
            obj = await self.client.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None

    async def list_services(self, namespace: str) -> list[JSON]:
        lst = await self.client.get(f"/api/v1/namespaces/{quote(namespace)}/services")
        items = lst.get("items") if isinstance(lst, dict) else None
        return [i for i in items or [] if isinstance(i, dict)]

    def post_event(
        self, pod: _PodBase, etype: str, reason: str, message: str, field_path: str | None
    ) -> None:
        if not self.events_enabled or self._events is None:
            return
        now = rfc3339(time.time())
        involved: JSON = {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        }
        if field_path:
            involved["fieldPath"] = field_path
        event: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{pod.name}.{uuid.uuid4().hex[:16]}",
                "namespace": pod.namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": etype,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": "kubelet", "host": self.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
        }
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(event)

    async def _event_poster(self) -> None:
        assert self._events is not None
        while True:
            event = await self._events.get()
            ns = quote(str(event["metadata"]["namespace"]))
            try:
                await self.client.request("POST", f"/api/v1/namespaces/{ns}/events", body=event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # events are best effort
                log.debug("event not posted: %s", exc)

    # -- pod events from the API -------------------------------------------------------

    def _on_pod_event(self, etype: str, obj: JSON) -> None:
        uid = str(_meta(obj).get("uid", ""))
        if not uid:
            return
        pod = self.pods.get(uid)
        if etype == "DELETED" or _spec(obj).get("nodeName") != self.node_name:
            if pod is not None:
                self._vanished(pod, obj)
            return
        if pod is None:
            if self._stopped:
                return
            pod = _SimPod(self, obj) if self.simulate else _Pod(self, obj)
            self.pods[uid] = pod
            if isinstance(pod, _Pod):
                pod.start()
                if _meta(obj).get("deletionTimestamp"):
                    pod.update(obj)
            elif _meta(obj).get("deletionTimestamp"):
                self._delete_queue.add(uid)
            else:
                self.mark_dirty(uid)
            return
        if isinstance(pod, _Pod):
            pod.update(obj)
            return
        pod.obj = obj
        if _meta(obj).get("deletionTimestamp"):
            self._delete_queue.add(uid)
        elif _spec(obj).get("readinessGates"):
            self.mark_dirty(uid)

    def _vanished(self, pod: _PodBase, obj: JSON) -> None:
        if isinstance(pod, _Pod):
            if not pod.gone:
                pod.vanished(obj)
        else:
            self.forget(pod)
            pod.release_ip()

    # -- writes ------------------------------------------------------------------------

    async def _write_status_key(self, uid: str) -> bool:
        pod = self.pods.get(uid)
        if pod is None or (isinstance(pod, _Pod) and pod.gone):
            return True
        return await self.write_status(pod)

    async def write_status(self, pod: _PodBase) -> bool:
        """Send the pod's status if it changed since the last write; False to retry."""
        status = pod.render_status()
        if status == pod.last_written:
            return True
        patch_status: JSON = dict(status)
        for key in pod.last_written or {}:
            if key not in status:
                patch_status[key] = None
        body = {"metadata": {"uid": pod.uid}, "status": patch_status}
        try:
            await self.client.request(
                "PATCH",
                pod.api_path + "/status",
                body=body,
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                # Gone, or a new pod of the same name (the uid precondition failed): the
                # DELETED event of this one follows.
                return True
            if 400 <= exc.status < 500 and exc.status != 429:
                log.warning("status of %s/%s rejected: %s", pod.namespace, pod.name, exc)
                pod.last_written = status  # retrying the same patch would fail the same way
                return True
            return False
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("status of %s/%s not written: %s", pod.namespace, pod.name, exc)
            return False
        pod.last_written = status
        return True

    async def _delete_key(self, uid: str) -> bool:
        pod = self.pods.get(uid)
        if pod is None:
            return True
        return await self._delete_once(pod)

    async def delete_pod(self, pod: _PodBase) -> None:
        """DELETE the pod (grace 0, uid precondition), retrying until it is gone."""
        delay = 0.2
        while not await self._delete_once(pod):
            if isinstance(pod, _Pod) and pod.gone:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _delete_once(self, pod: _PodBase) -> bool:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": pod.uid},
        }
        try:
            await self.client.request(
                "DELETE", pod.api_path, params={"gracePeriodSeconds": "0"}, body=body
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                return True  # already gone, or another pod of the same name now
            log.warning("deleting %s/%s: %s", pod.namespace, pod.name, exc)
            return False
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("deleting %s/%s: %s", pod.namespace, pod.name, exc)
            return False
        return True
