"""The operator at scale: N LMTrainingJobs on devcluster in simulate mode.

For each N in `--jobs`: devcluster (`--simulate`, its own process), the CRDs from
`crds/`, one namespace, the stand-in workers (below, their own process) and the operator
(`elasticlm operator -n bench`, its own process) start afresh. Then:

1. apply: N jobs (the example job of `manifests/examples/training-job.yaml`, with
   `--replicas` workers, elastic up to what the scales need, a target of 100,000,000
   steps) are created, 16 requests in flight; timed from the last create's answer to
   every job's `status.phase` Running (from a watch).
2. running window (`--window-seconds`): the operator's API requests (devcluster's
   `apiserver_request_total`, every client but the kubelet and this bench), its CPU
   seconds and RSS (from /proc, its process and any children), and the lag of
   `status.step` behind the steps the stand-in workers serve, sampled every 0.25 s per
   job (and at every status change, just before it) from a watch of the jobs.
3. scales: `--scales` patches of the scale subresource (as `kubectl scale`), one every
   `--scale-interval` seconds, round robin over the jobs, each one worker up; each is
   timed from just before its PATCH to the ADDED event of the new `<job>-worker-<i>` on
   a pod watch opened at the start.
4. finished window: every worker pod's status is patched to Succeeded with the
   termination message a worker writes when training is complete
   (`{"completed": true, "step": S}`, S the job's target); once every job is Succeeded
   and `--settle-seconds` have passed, the same figures over another window. No job has
   ttlSecondsAfterFinished.

Stand-in workers: simulated pods run no processes, so one process of this bench
(`--stand-in`, started by it) watches the worker pods and, for each one that is Running
with a pod IP, serves `http://<podIP>:9400/metrics` as lmworker does: step, loss, tokens
per second, world size (the job's worker pods it serves), rank (the pod's index), round
and target steps. The step is the same for every worker: one per `--step-seconds` since
the bench started, so the served step at any time is known to the bench.

The operator runs as `python -P -m lmoperator operator -n bench --metrics-port P`, with
`--operator-pythonpath DIR` put first on its PYTHONPATH (and nowhere else), to measure
the operator of another checkout (DIR is that checkout's `operator/` directory); the
operator process logs which `lmoperator` it imported, and the JSON says it.

    .venv/bin/python bench/operator_scale.py [--jobs 50,200,500] [--window-seconds 60]
        [--scales 200] [--operator-pythonpath DIR] [--repeats 1]

Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from elastic_harness import free_port, install_signal_cleanup, log, tree
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "manifests" / "examples" / "training-job.yaml"
CRDS = ROOT / "crds"
NAMESPACE = "bench"
GROUP_VERSION = "elasticlm.io/v1alpha1"
JOBS = f"/apis/{GROUP_VERSION}/namespaces/{NAMESPACE}/lmtrainingjobs"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
# The labels the operator puts on its pods (the selector of `status.selector`).
JOB_LABEL = "elasticlm.io/job"
ROLE_LABEL = "elasticlm.io/role"
INDEX_LABEL = "elasticlm.io/index"
METRICS_PORT = 9400  # lmworker.config.METRICS_PORT
TARGET_STEPS = 100_000_000
# Requests of these clients (User-Agent products) are not the operator's.
USER_AGENT = "elasticlm-bench/1"
NOT_OPERATOR = {"elasticlm-bench", "kubelet"}
CONCURRENCY = 16
LAG_SAMPLE_SECONDS = 0.25
PY = sys.executable


def served_step(epoch: float, step_seconds: float, t: float) -> int:
    """The step every stand-in worker serves at wall-clock time `t`."""
    return max(0, math.floor((t - epoch) / step_seconds))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- the stand-in workers ----------------------------------------------------------------


class StandIn:
    """One metrics server per Running worker pod, on <podIP>:9400."""

    def __init__(self, epoch: float, step_seconds: float) -> None:
        self.epoch = epoch
        self.step_seconds = step_seconds
        self.servers: dict[str, asyncio.Server] = {}  # pod name -> server
        self.ips: dict[str, str] = {}
        self.jobs: dict[str, set[str]] = defaultdict(set)  # job -> pod names served
        self.scrapes = 0

    def body(self, job: str, index: int) -> bytes:
        step = served_step(self.epoch, self.step_seconds, time.time())
        figures = {
            "elasticlm_train_step": step,
            "elasticlm_train_loss": 2.5,
            "elasticlm_train_tokens_per_second": 1000.0,
            "elasticlm_train_world_size": len(self.jobs[job]),
            "elasticlm_train_rank": index,
            "elasticlm_train_round": 1,
            "elasticlm_train_target_steps": TARGET_STEPS,
        }
        lines = [f"# TYPE {name} gauge\n{name} {value}\n" for name, value in figures.items()]
        return "".join(lines).encode()

    async def serve(self, name: str, ip: str, job: str, index: int) -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    await reader.readuntil(b"\r\n\r\n")
                body = self.body(job, index)
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
                self.scrapes += 1
            except OSError:
                pass
            finally:
                writer.close()

        try:
            server = await asyncio.start_server(answer, ip, METRICS_PORT, reuse_address=True)
        except OSError as exc:
            log(f"stand-in: cannot serve {name} on {ip}:{METRICS_PORT}: {exc}")
            return
        self.servers[name] = server
        self.ips[name] = ip
        self.jobs[job].add(name)

    def stop(self, name: str) -> None:
        server = self.servers.pop(name, None)
        self.ips.pop(name, None)
        for members in self.jobs.values():
            members.discard(name)
        if server is not None:
            server.close()

    async def on_pod(self, etype: str, pod: dict[str, Any], _t: float) -> None:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(ROLE_LABEL) != "worker":
            return
        name = str(meta.get("name"))
        status = pod.get("status") or {}
        ip = status.get("podIP")
        live = (
            etype != "DELETED"
            and not meta.get("deletionTimestamp")
            and status.get("phase") == "Running"
            and bool(ip)
        )
        if not live or (name in self.ips and self.ips[name] != ip):
            self.stop(name)
        if live and name not in self.servers:
            index = int(labels.get(INDEX_LABEL, "0"))
            await self.serve(name, str(ip), str(labels.get(JOB_LABEL)), index)


async def stand_in_main(url: str, epoch: float, step_seconds: float) -> None:
    stand_in = StandIn(epoch, step_seconds)
    async with client_session() as session:
        ready = asyncio.Event()
        watcher = asyncio.create_task(
            watch(
                session,
                url + PODS,
                stand_in.on_pod,
                ready,
                {"labelSelector": f"{ROLE_LABEL}=worker"},
            )
        )
        await ready.wait()
        print("ready", flush=True)
        await watcher


# -- API helpers ------------------------------------------------------------------------


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT},
        connector=aiohttp.TCPConnector(limit=64),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
    )


EventHandler = Callable[[str, dict[str, Any], float], Awaitable[None] | None]


async def watch(
    session: aiohttp.ClientSession,
    url: str,
    handler: EventHandler,
    synced: asyncio.Event | None = None,
    params: dict[str, str] | None = None,
) -> None:
    """List, then watch from there, forever (relisting when a watch ends or fails).

    `handler(type, object, time.monotonic() when the line arrived)`; the list's items come
    as ADDED.
    """
    while True:
        try:
            async with session.get(url, params=params or {}) as response:
                listed = await response.json()
            version = listed["metadata"]["resourceVersion"]
            for item in listed.get("items") or []:
                result = handler("ADDED", item, time.monotonic())
                if result is not None:
                    await result
            if synced is not None:
                synced.set()
            query = {**(params or {}), "watch": "true", "resourceVersion": version}
            query["timeoutSeconds"] = "1500"
            async with session.get(url, params=query) as response:
                async for line in response.content:
                    t = time.monotonic()
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        result = handler(event["type"], event["object"], t)
                        if result is not None:
                            await result
        except (aiohttp.ClientError, ValueError, KeyError) as exc:
            log(f"watch of {url} ended: {exc!r}; relisting")
            await asyncio.sleep(0.5)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    content_type: str = "application/json",
    ok: tuple[int, ...] = (),
) -> Any:
    data = None if body is None else json.dumps(body)
    headers = {"Content-Type": content_type} if data is not None else {}
    async with session.request(method, url, data=data, headers=headers) as response:
        text = await response.text()
        if response.status >= 400 and response.status not in ok:
            raise RuntimeError(f"{method} {url}: {response.status} {text[:500]}")
        return json.loads(text) if text and text.startswith("{") else text


async def bounded(calls: list[Callable[[], Awaitable[Any]]], concurrency: int) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with semaphore:
            await call()

    await asyncio.gather(*(one(c) for c in calls))


async def operator_requests(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Requests so far of every client but this bench and the kubelet, by VERB resource."""
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name != "apiserver_request_total" or s.labels["client"] in NOT_OPERATOR:
                continue
            resource = s.labels["resource"] + (
                f"/{s.labels['subresource']}" if s.labels["subresource"] else ""
            )
            out[f"{s.labels['verb']} {resource or '-'}"] += s.value
    return out


# -- processes --------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of these processes and their waited-for children."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def start_devcluster(state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    state_dir.mkdir(parents=True)
    log_file = (state_dir / "devcluster.log").open("wb")
    process = subprocess.Popen(
        [PY, "-P", "-m", "devcluster", "up", "--simulate", "--state-dir", str(state_dir)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=state_dir,
    )
    info = state_dir / "devcluster.json"
    deadline = time.monotonic() + 60
    while not info.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"devcluster did not start; see {state_dir}/devcluster.log")
        time.sleep(0.05)
    return process, str(json.loads(info.read_text())["url"])


# Run in the operator's process: say which lmoperator it is, then `python -m lmoperator`.
OPERATOR_LAUNCHER = (
    "import runpy, sys, lmoperator; "
    "print('lmoperator imported from', lmoperator.__file__, file=sys.stderr, flush=True); "
    "sys.argv = ['elasticlm', *sys.argv[1:]]; "
    "runpy.run_module('lmoperator', run_name='__main__', alter_sys=True)"
)


def start_operator(
    state_dir: Path, kubeconfig: Path, pythonpath: str | None, metrics_port: int
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (pythonpath, os.environ.get("PYTHONPATH")) if p
        )
    command = [PY, "-P", "-c", OPERATOR_LAUNCHER, "operator", "-n", NAMESPACE]
    command += ["--metrics-port", str(metrics_port)]
    log_file = (state_dir / "operator.log").open("wb")
    return subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=state_dir,
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the jobs ---------------------------------------------------------------------------


def job_manifest(name: str, replicas: int, max_replicas: int) -> dict[str, Any]:
    job: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    job["metadata"] = {"name": name, "namespace": NAMESPACE}
    spec = job["spec"]
    spec["replicas"] = replicas
    spec["elastic"]["maxReplicas"] = max_replicas
    spec["data"]["claimName"] = "bench-data"
    spec["checkpoint"]["claimName"] = "bench-checkpoints"
    spec["checkpoint"]["path"] = name
    training = spec["training"]
    training["steps"] = TARGET_STEPS
    # At least one micro-batch per worker at the largest size.
    training["globalBatchSize"] = training["microBatchSize"] * max(6, max_replicas)
    return job


def claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def finished_status(pod: dict[str, Any]) -> dict[str, Any]:
    """What a worker pod's status is once its worker wrote the completion report and exited."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    started = (pod.get("status") or {}).get("startTime") or now
    report = json.dumps({"completed": True, "step": TARGET_STEPS})
    containers = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        terminated = {
            "exitCode": 0,
            "reason": "Completed",
            "message": report,
            "startedAt": started,
            "finishedAt": now,
        }
        containers.append(
            {
                "name": c["name"],
                "state": {"terminated": terminated},
                "lastState": {},
                "ready": False,
                "restartCount": 0,
                "image": c.get("image", ""),
                "imageID": c.get("image", ""),
                "started": False,
            }
        )
    conditions = [
        {"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
        for t in ("Ready", "ContainersReady")
    ]
    return {
        "status": {"phase": "Succeeded", "conditions": conditions, "containerStatuses": containers}
    }


class Observer:
    """What the bench's watches saw: jobs' phases and steps, pods' ADDED times."""

    def __init__(self, epoch: float, step_seconds: float) -> None:
        self.epoch = epoch
        self.step_seconds = step_seconds
        self.phase: dict[str, str] = {}
        self.step: dict[str, int] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.added: dict[str, float] = {}  # pod name -> monotonic time of its first ADDED
        self.lags: list[float] | None = None  # collected while not None
        self.changed = asyncio.Event()

    def lag_now(self, job: str, t: float) -> float | None:
        step = self.step.get(job)
        if step is None:
            return None
        return (served_step(self.epoch, self.step_seconds, t) - step) * self.step_seconds

    def on_job(self, etype: str, job: dict[str, Any], _t: float) -> None:
        name = str(job["metadata"]["name"])
        status = job.get("status") or {}
        if etype == "DELETED":
            self.phase.pop(name, None)
            return
        self.phase[name] = str(status.get("phase") or "")
        step = status.get("step")
        if isinstance(step, int) and step != self.step.get(name):
            if self.lags is not None:  # the lag just before this update
                lag = self.lag_now(name, time.time())
                if lag is not None:
                    self.lags.append(lag)
            self.step[name] = step
        self.changed.set()

    def on_pod(self, etype: str, pod: dict[str, Any], t: float) -> None:
        name = str(pod["metadata"]["name"])
        if etype == "DELETED":
            self.pods.pop(name, None)
            return
        self.pods[name] = pod
        self.added.setdefault(name, t)

    async def wait(self, what: str, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log(f"timed out after {timeout:g} s waiting for {what}")
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
        return True

    async def sample_lags(self, jobs: list[str]) -> None:
        while True:
            await asyncio.sleep(LAG_SAMPLE_SECONDS)
            if self.lags is None:
                continue
            t = time.time()
            for job in jobs:
                lag = self.lag_now(job, t)
                if lag is not None:
                    self.lags.append(lag)


class Window:
    """The operator's requests, CPU and RSS over a stretch of time."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        operator: subprocess.Popen[bytes],
        devcluster: subprocess.Popen[bytes],
    ) -> None:
        self.session = session
        self.url = url
        self.operator = operator
        self.devcluster = devcluster

    async def measure(self, seconds: float, jobs: int) -> dict[str, Any]:
        before = await operator_requests(self.session, self.url)
        cpu0 = cpu_seconds(tree(self.operator.pid))
        dev0 = cpu_seconds(tree(self.devcluster.pid))
        t0 = time.monotonic()
        rss: list[int] = []
        while time.monotonic() - t0 < seconds:
            rss.append(rss_bytes(tree(self.operator.pid)))
            await asyncio.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - t0))))
        minutes = (time.monotonic() - t0) / 60
        cpu = cpu_seconds(tree(self.operator.pid)) - cpu0
        dev = cpu_seconds(tree(self.devcluster.pid)) - dev0
        after = await operator_requests(self.session, self.url)
        by_kind = {k: (after[k] - before.get(k, 0)) / minutes for k in after}
        by_verb: dict[str, float] = defaultdict(float)
        for key, rate in by_kind.items():
            by_verb[key.split(" ", 1)[0]] += rate
        total = sum(by_kind.values())
        return {
            "requests_per_min": round(total, 1),
            "requests_per_job_min": round(total / jobs, 3),
            "requests_per_min_by_verb": {k: round(v, 1) for k, v in sorted(by_verb.items()) if v},
            "requests_per_min_by_resource": {
                k: round(v, 1) for k, v in sorted(by_kind.items()) if v
            },
            "cpu_s_per_min": round(cpu / minutes, 2),
            "cpu_percent_of_core": round(100 * cpu / (minutes * 60), 1),
            "rss_mib_max": round(max(rss) / 2**20, 1) if rss else None,
            "devcluster_cpu_percent_of_core": round(100 * dev / (minutes * 60), 1),
        }


async def run_once(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"jobs": n, "loadavg_start": loadavg()}
    started = time.monotonic()
    epoch = time.time()
    scales_per_job = math.ceil(args.scales / n)
    max_replicas = args.replicas + scales_per_job
    devcluster, url = start_devcluster(workdir / "devcluster")
    procs: list[subprocess.Popen[bytes]] = [devcluster]
    tasks: list[asyncio.Task[None]] = []
    try:
        async with client_session() as session:
            for path in sorted(CRDS.glob("*.yaml")):
                for doc in yaml.safe_load_all(path.read_text()):
                    if doc:
                        await request(
                            session,
                            "POST",
                            url + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                            doc,
                        )
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            await request(session, "POST", url + "/api/v1/namespaces", namespace)
            for name in ("bench-data", "bench-checkpoints"):
                pvcs = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"
                await request(session, "POST", url + pvcs, claim(name))

            step = ["--step-seconds", str(args.step_seconds)]
            stand_in = subprocess.Popen(
                [PY, __file__, "--stand-in", url, "--epoch", repr(epoch), *step],
                stdout=subprocess.PIPE,
                stderr=(workdir / "stand-in.log").open("wb"),
                stdin=subprocess.DEVNULL,
            )
            procs.append(stand_in)
            assert stand_in.stdout is not None
            line = await asyncio.to_thread(stand_in.stdout.readline)
            if line.strip() != b"ready":
                raise RuntimeError(f"the stand-in workers did not start: see {workdir}")

            kubeconfig = workdir / "devcluster" / "kubeconfig"
            metrics_port = free_port()
            operator = start_operator(workdir, kubeconfig, args.operator_pythonpath, metrics_port)
            procs.append(operator)
            deadline = time.monotonic() + 60
            while True:
                if operator.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the operator did not start: see {workdir}/operator.log")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.2)
            await asyncio.sleep(args.settle_seconds)  # its watches open
            first = (workdir / "operator.log").read_text().splitlines()[:1]
            result["operator_module"] = first[0].split(" from ", 1)[-1] if first else None

            observer = Observer(epoch, args.step_seconds)
            jobs_synced, pods_synced = asyncio.Event(), asyncio.Event()
            tasks.append(
                asyncio.create_task(watch(session, url + JOBS, observer.on_job, jobs_synced))
            )
            tasks.append(
                asyncio.create_task(watch(session, url + PODS, observer.on_pod, pods_synced))
            )
            await jobs_synced.wait()
            await pods_synced.wait()
            names = [f"job-{i:04d}" for i in range(n)]
            tasks.append(asyncio.create_task(observer.sample_lags(names)))
            window = Window(session, url, operator, devcluster)

            # 1. apply
            log(f"N={n}: creating the jobs")
            t_first = time.monotonic()
            await bounded(
                [
                    (
                        lambda job=job: request(
                            session,
                            "POST",
                            url + JOBS,
                            job_manifest(job, args.replicas, max_replicas),
                        )
                    )
                    for job in names
                ],
                CONCURRENCY,
            )
            t_last = time.monotonic()
            result["apply_seconds"] = round(t_last - t_first, 2)
            running = await observer.wait(
                "every job Running",
                lambda: sum(observer.phase.get(j) == "Running" for j in names) == n,
                args.running_timeout,
            )
            result["last_apply_to_all_running_s"] = (
                round(time.monotonic() - t_last, 2) if running else None
            )
            result["running_at_timeout"] = sum(observer.phase.get(j) == "Running" for j in names)

            # 2. running window
            log(f"N={n}: running window of {args.window_seconds:g} s")
            observer.lags = []
            running_window = await window.measure(args.window_seconds, n)
            lags, observer.lags = observer.lags, None
            running_window["status_lag_max_s"] = rounded(max(lags) if lags else None, 2)
            running_window["status_lag_p99_s"] = rounded(percentile(lags, 0.99), 2)
            running_window["status_lag_p50_s"] = rounded(percentile(lags, 0.5), 2)
            running_window["jobs_without_status_step"] = sum(j not in observer.step for j in names)
            result["running"] = running_window

            # 3. scales
            log(f"N={n}: {args.scales} scales, one every {args.scale_interval:g} s")
            replicas = dict.fromkeys(names, args.replicas)
            sent: dict[str, float] = {}
            for i in range(args.scales):
                job = names[i % n]
                replicas[job] += 1
                pod = f"{job}-worker-{replicas[job] - 1}"
                sent[pod] = time.monotonic()
                await request(
                    session,
                    "PATCH",
                    f"{url}{JOBS}/{job}/scale",
                    {"spec": {"replicas": replicas[job]}},
                    content_type="application/merge-patch+json",
                )
                await asyncio.sleep(max(0.0, sent[pod] + args.scale_interval - time.monotonic()))
            await observer.wait(
                "the scaled workers", lambda: all(p in observer.added for p in sent), 60
            )
            latencies = [observer.added[p] - t for p, t in sent.items() if p in observer.added]
            result["scale_to_pod"] = {
                "scales": len(sent),
                "pods_seen": len(latencies),
                "p50_s": rounded(percentile(latencies, 0.5)),
                "p99_s": rounded(percentile(latencies, 0.99)),
                "max_s": rounded(max(latencies) if latencies else None),
            }

            # 4. finish, then the finished window
            log(f"N={n}: finishing every job")
            workers = [
                p
                for p in observer.pods.values()
                if (p["metadata"].get("labels") or {}).get(ROLE_LABEL) == "worker"
                and not p["metadata"].get("deletionTimestamp")
            ]
            t_finish = time.monotonic()
            await bounded(
                [
                    (
                        lambda p=p: request(
                            session,
                            "PATCH",
                            f"{url}{PODS}/{p['metadata']['name']}/status",
                            finished_status(p),
                            content_type="application/merge-patch+json",
                            ok=(404,),
                        )
                    )
                    for p in workers
                ],
                CONCURRENCY,
            )
            done = await observer.wait(
                "every job Succeeded",
                lambda: all(observer.phase.get(j) == "Succeeded" for j in names),
                args.running_timeout,
            )
            result["finish_to_all_succeeded_s"] = (
                round(time.monotonic() - t_finish, 2) if done else None
            )
            result["succeeded"] = sum(observer.phase.get(j) == "Succeeded" for j in names)
            await asyncio.sleep(args.settle_seconds)
            log(f"N={n}: finished window of {args.window_seconds:g} s")
            result["finished"] = await window.measure(args.window_seconds, n)
            result["operator_exit_code"] = operator.poll()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for process in reversed(procs):
            stop(process)
    result["loadavg_end"] = loadavg()
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="50,200,500", help="comma-separated N")
    parser.add_argument("--replicas", type=int, default=2, help="workers per job at the start")
    parser.add_argument("--window-seconds", type=float, default=60)
    parser.add_argument("--scales", type=int, default=200)
    parser.add_argument("--scale-interval", type=float, default=0.25)
    parser.add_argument("--step-seconds", type=float, default=1.0, help="one served step per")
    parser.add_argument("--settle-seconds", type=float, default=5.0)
    parser.add_argument("--running-timeout", type=float, default=300)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--operator-pythonpath",
        help="put first on the operator's PYTHONPATH (another checkout's operator/ directory)",
    )
    parser.add_argument("--keep-logs", help="copy the logs of every run here")
    parser.add_argument("--stand-in", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--epoch", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stand_in:
        asyncio.run(stand_in_main(args.stand_in, args.epoch, args.step_seconds))
        return

    install_signal_cleanup()
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-operator-scale-") as tmp:
        try:
            for repeat in range(args.repeats):
                for n in (int(x) for x in args.jobs.split(",")):
                    log(f"repeat {repeat + 1}/{args.repeats}: N={n}")
                    workdir = Path(tmp) / f"n{n}-r{repeat}"
                    workdir.mkdir()
                    runs.append(asyncio.run(run_once(n, args, workdir)))
                    log(json.dumps(runs[-1]))
        finally:
            if args.keep_logs:
                shutil.copytree(
                    tmp,
                    args.keep_logs,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("snapshot*", "claims"),
                )
    print(
        json.dumps(
            {
                "bench": "operator_scale",
                "operator_pythonpath": args.operator_pythonpath,
                "replicas": args.replicas,
                "window_seconds": args.window_seconds,
                "scales": args.scales,
                "scale_interval_s": args.scale_interval,
                "step_seconds": args.step_seconds,
                "repeats": args.repeats,
                "cpus": os.cpu_count(),
                "runs": runs,
                "spread": spread(runs) if args.repeats > 1 else None,
                "wall_s": round(time.monotonic() - started, 1),
            }
        )
    )


def spread(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per N, for each headline figure: [median, min, max] over the repeats."""
    keys = [
        ("last_apply_to_all_running_s",),
        ("running", "requests_per_min"),
        ("running", "cpu_percent_of_core"),
        ("running", "rss_mib_max"),
        ("running", "status_lag_max_s"),
        ("finished", "requests_per_min"),
        ("scale_to_pod", "p50_s"),
        ("scale_to_pod", "p99_s"),
    ]
    out: dict[str, dict[str, list[float]]] = {}
    for n in sorted({r["jobs"] for r in runs}):
        figures: dict[str, list[float]] = {}
        for path in keys:
            values = []
            for r in (r for r in runs if r["jobs"] == n):
                value: Any = r
                for k in path:
                    value = value.get(k) if isinstance(value, dict) else None
                if isinstance(value, int | float):
                    values.append(float(value))
            if values:
                figures[".".join(path)] = [statistics.median(values), min(values), max(values)]
        out[str(n)] = figures
    return out


if __name__ == "__main__":
    main()
