"""A pod whose containers run as local processes.

`Pod` runs its init containers in order, each to completion, then its app containers
(`lifecycle.Container`); it sets up its volumes first (`volumes`) and computes each
container's configuration when the container starts (argv, environment with service
links, mount paths rewritten, working directory). It fails on activeDeadlineSeconds,
tears its containers down on deletion (then deletes itself) or when it vanishes from the
API (then frees its IP and files), and renders its status: phase and conditions from
its containers' statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster import paths
from devcluster.kubelet.base import PodBase, grace_period, pod_meta, pod_spec, pod_status
from devcluster.kubelet.lifecycle import (
    Container,
    ContainerConfig,
    exit_code_of,
    termination_message_path,
)
from devcluster.kubelet.mountns_runner import wrap_in_mount_namespace
from devcluster.kubelet.volumes import make_dirs, prepare_volumes, write_volumes
from devcluster.podspec.common import JSON, parse_time, rfc3339
from devcluster.podspec.env import container_env, service_env
from devcluster.podspec.lifecycle import container_argv, resolve_program
from devcluster.podspec.status import compute_phase, pod_conditions
from devcluster.podspec.volumes import (
    DEFAULT_TOKEN_SECONDS,
    PathRewriter,
    container_mounts,
    mount_env_name,
    token_sources,
)

if TYPE_CHECKING:
    from devcluster.kubelet.node import Kubelet

log = logging.getLogger(__name__)


class Pod(PodBase):
    """A pod whose containers run as local processes."""

    def __init__(self, kubelet: Kubelet, obj: JSON) -> None:
        super().__init__(kubelet, obj)
        spec = pod_spec(obj)
        self.restart_policy = str(spec.get("restartPolicy") or "Always")
        self.inits = [Container(self, c, True) for c in spec.get("initContainers") or []]
        self.apps = [Container(self, c, False) for c in spec.get("containers") or []]
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
        self.volume_event_sent = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def containers(self) -> list[Container]:
        return self.inits + self.apps

    def mark(self) -> None:
        self.kubelet.mark_dirty(self.uid)

    def event(self, etype: str, reason: str, message: str, c: Container | None = None) -> None:
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
        deadline = pod_spec(self.obj).get("activeDeadlineSeconds")
        if isinstance(deadline, int) and deadline > 0:
            self.kubelet.spawn(self._deadline(deadline), f"deadline {self.key}")

    def update(self, obj: JSON) -> None:
        self.obj = obj
        if pod_meta(obj).get("deletionTimestamp") and not self.deleting:
            self.deleting = True
            self._teardown = self.kubelet.spawn(self._delete(), f"delete {self.key}")
        elif pod_spec(obj).get("readinessGates"):
            self.mark()

    def vanished(self, obj: JSON) -> None:
        """The pod object is gone from the API: kill what runs, free the IP and files."""
        self.gone = True
        self.obj = obj
        self.kubelet.spawn(self._cleanup(), f"cleanup {self.key}")

    async def _run(self) -> None:
        status = pod_status(self.obj)
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
        if not await prepare_volumes(self):
            return
        if token_sources(self.obj):
            self.kubelet.spawn(self._refresh_tokens(), f"tokens {self.key}")
        self.sandbox_ready = True
        self.mark()
        for c in self.inits:
            if c.done and exit_code_of(c.state) == 0:
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

    async def _refresh_tokens(self) -> None:
        """Rewrite the projected volumes with fresh service-account tokens at 80 % of
        the shortest token's lifetime, as the kubelet's token manager does."""
        lifetime = min(
            int(s.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
            for s in token_sources(self.obj)
        )
        delay = 0.8 * lifetime
        while not await self.wait_stopping(delay):
            try:
                await write_volumes(self)
                delay = 0.8 * lifetime
            except Exception as exc:  # the old token stays until it expires; retry soon
                self.event("Warning", "FailedMount", f"MountVolume.SetUp failed: {exc}")
                delay = min(60.0, 0.1 * lifetime)

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

    async def container_config(self, c: Container) -> ContainerConfig:
        """Everything needed to start container `c` now: argv, environment, directory."""
        kubelet = self.kubelet
        sources = await kubelet.fetch_sources(self.namespace, self.obj)
        svc_env: dict[str, str] = {}
        if pod_spec(self.obj).get("enableServiceLinks", True) is not False:
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
        env["HOSTNAME"] = str(pod_spec(self.obj).get("hostname") or self.name)
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
        await asyncio.to_thread(make_dirs, [Path(cwd), term_file.parent] + [p for _, p in mounts])
        if kubelet.mount_namespaces and mounts:
            read_only = [bool(m.get("readOnly")) for m in c.spec.get("volumeMounts") or []]
            binds = [
                (str(local), target, ro)
                for (target, local), ro in zip(mounts, read_only, strict=True)
            ]
            protected = [str(kubelet.state_dir), sys.prefix, os.path.dirname(sys.executable)]
            root = paths.pod_dir(kubelet.state_dir, self.namespace, self.name, self.uid)
            root = root / "rootfs" / c.name
            argv, skipped = wrap_in_mount_namespace(argv, binds, cwd, protected, str(root))
            for note in skipped:  # the kubelet's log: container logs stay the program's own
                log.info("pod %s container %s: %s", self.key, c.name, note)
        return ContainerConfig(
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
        await self.stop_containers(grace_period(self.obj))
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
        grace = grace_period(self.obj)
        await self.stop_containers(grace)
        self.terminal = True
        if self.final_phase is None and not self.gone:
            await self.kubelet.write_status(self)
        await self.kubelet.delete_pod(self)

    async def _cleanup(self) -> None:
        try:
            await self.stop_containers(min(grace_period(self.obj), self.kubelet.stop_timeout))
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
                str(g.get("conditionType")) for g in pod_spec(self.obj).get("readinessGates") or []
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
