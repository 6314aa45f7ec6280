"""Probes and lifecycle hooks of a container.

startupProbe, livenessProbe and readinessProbe run while the container does, with
Kubernetes' defaults and thresholds (`podspec.parse_probe`): httpGet to the pod IP,
tcpSocket, and exec run locally with the container's environment; grpc probes fail with
a message saying they are not supported. A passed startup probe marks the container
started; readiness sets `ready`; a failed liveness or startup probe kills the container,
which then restarts per restartPolicy. Lifecycle hooks (preStop) share the exec and
httpGet handlers, plus sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from devcluster.kubelet.base import pod_spec
from devcluster.kubelet.processes import MARKER_ENV, STATE_ENV, signal_group
from devcluster.podspec.common import JSON
from devcluster.podspec.lifecycle import resolve_program
from devcluster.podspec.probes import ProbeSpec, parse_probe

if TYPE_CHECKING:
    from devcluster.kubelet.lifecycle import Container, ContainerConfig

log = logging.getLogger(__name__)


async def probe_loop(c: Container, cfg: ContainerConfig) -> None:
    try:
        startup = c.probes["startup"]
        if startup is not None:
            if not await _startup(c, startup, cfg):
                return
            c.started = True
            if c.probes["readiness"] is None:
                c.ready = True
            c.mark()
        loops = [
            _periodic(c, p, cfg)
            for p in (c.probes["liveness"], c.probes["readiness"])
            if p is not None
        ]
        if loops:
            await asyncio.gather(*loops)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s: probes of %s failed", c.pod.key, c.name)


async def _startup(c: Container, probe: ProbeSpec, cfg: ContainerConfig) -> bool:
    await asyncio.sleep(probe.initial_delay)
    failures = 0
    while True:
        ok, msg = await _probe(c, probe, cfg)
        if ok:
            return True
        failures += 1
        if failures >= probe.failure_threshold:
            await _probe_kill(c, probe, msg)
            return False
        await asyncio.sleep(probe.period)


async def _periodic(c: Container, probe: ProbeSpec, cfg: ContainerConfig) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(probe.initial_delay)
    successes = failures = 0
    while True:
        t0 = loop.time()
        ok, msg = await _probe(c, probe, cfg)
        if ok:
            successes += 1
            failures = 0
        else:
            failures += 1
            successes = 0
        if probe.kind == "readiness":
            if ok and not c.ready and successes >= probe.success_threshold:
                c.ready = True
                c.mark()
            elif not ok and failures >= probe.failure_threshold and c.ready:
                c.ready = False
                c.mark()
            if not ok and failures == probe.failure_threshold:
                c.pod.event("Warning", "Unhealthy", f"Readiness probe failed: {msg}", c)
        elif not ok and failures >= probe.failure_threshold:
            await _probe_kill(c, probe, msg)
            return
        await asyncio.sleep(max(0.0, probe.period - (loop.time() - t0)))


async def _probe_kill(c: Container, probe: ProbeSpec, msg: str) -> None:
    kind = probe.kind.capitalize()
    c.pod.event("Warning", "Unhealthy", f"{kind} probe failed: {msg}", c)
    c.pod.event(
        "Normal",
        "Killing",
        f"Container {c.name} failed {probe.kind} probe, will be restarted",
        c,
    )
    grace = (
        probe.termination_grace
        if probe.termination_grace is not None
        else float(pod_spec(c.pod.obj).get("terminationGracePeriodSeconds", 30) or 0)
    )
    # Run the termination outside this (probe) task: run() cancels it on exit.
    task = c.kubelet.spawn(c.terminate(grace), f"terminate {c.marker}")
    await asyncio.shield(task)


async def _probe(c: Container, probe: ProbeSpec, cfg: ContainerConfig) -> tuple[bool, str]:
    if probe.error:
        return False, probe.error
    try:
        if probe.handler == "grpc":
            # Never report a result we did not measure: the probe fails visibly.
            return (
                False,
                "grpc probes are not supported by devcluster; use httpGet, tcpSocket or exec",
            )
        return await asyncio.wait_for(_handle(c, probe, cfg), timeout=probe.timeout)
    except TimeoutError:
        return False, f"timeout after {probe.timeout:g}s"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


async def _handle(c: Container, probe: ProbeSpec, cfg: ContainerConfig) -> tuple[bool, str]:
    host = probe.host or c.pod.ip or c.kubelet.host_ip
    if probe.handler == "httpGet":
        scheme = "https" if probe.scheme == "HTTPS" else "http"
        url = f"{scheme}://{host}:{probe.port}{probe.path}"
        headers = {"User-Agent": "kube-probe/1.33", "Accept": "*/*"}
        headers.update(dict(probe.headers))
        async with c.kubelet.probe_session.get(
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
        return await _exec(c, list(probe.command), cfg)
    return False, "probe has no handler"


async def _exec(c: Container, command: list[str], cfg: ContainerConfig) -> tuple[bool, str]:
    argv = [cfg.rewrite(x) for x in command]
    argv[0] = resolve_program(argv[0], cfg.env.get("PATH"))
    env = dict(cfg.env)
    env[MARKER_ENV] = c.marker
    env[STATE_ENV] = str(c.kubelet.state_dir)
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
            signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), timeout=5)
    text = out.decode(errors="replace").strip()[-1024:]
    return proc.returncode == 0, text or f"command exited with {proc.returncode}"


async def run_handler(c: Container, handler: JSON, cfg: ContainerConfig) -> None:
    """A lifecycle hook (exec or httpGet)."""
    if handler.get("exec"):
        await _exec(c, [str(x) for x in handler["exec"].get("command") or []], cfg)
    elif handler.get("httpGet"):
        probe = parse_probe("liveness", {"httpGet": handler["httpGet"]}, c.spec)
        if probe is not None and probe.error is None:
            await _handle(c, probe, cfg)
    elif handler.get("sleep"):
        await asyncio.sleep(float(handler["sleep"].get("seconds", 0)))
