"""Operator failover with --leader-elect: how long until the standby leads and acts.

devcluster (`--simulate`, its own process) and two operators (`elasticlm operator
--leader-elect`, each its own process, Kubernetes' lease timings unless given) run in
one namespace. Each repeat:

1. one more LMTrainingJob with 1 worker is created and the bench waits until it is
   Running (the leader is in its steady state: renewing, its daemons idle) and the
   standby's `/readyz` says `standby` (it is in its loop of tries);
2. a random pause of up to one retry period, so that the stop falls anywhere in the
   leader's renewal cycle rather than always at the same phase of it;
3. the leader is stopped: `kill` sends SIGKILL (a crash: nothing is released), `term`
   sends SIGTERM (a rolling update: kopf stops, then the Lease is released); at the same
   moment the job is scaled 1 -> 2, a change only a leader acts on;
4. the bench polls every `--poll-ms`: `acquire_s` is the time from the signal until the
   Lease names the standby, `first_action_s` until the new worker pod exists (the new
   leader started kopf, listed the objects and ran its first pass);
5. the stopped operator is started again, as the kubelet would restart its container,
   and becomes the next standby.

The peer (`restart`): one operator without leader election, killed with SIGKILL and
started again at once (a restart with no delay, no image pull, no rescheduling: the
best a single replica can do); `first_action_s` is from the kill to its first action.

    .venv/bin/python bench/failover.py [--repeats 5] [--lease-duration 15]
        [--renew-deadline 10] [--retry-period 2]

Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from lmoperator.api.kinds import LEASE, TRAINING_JOB
from lmoperator.localstack import LocalStack, devcluster_running, free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "manifests" / "examples" / "training-job.yaml"
NAMESPACE = "bench"
LEASE_NAME = "elasticlm-operator"
TIMEOUT = 120.0


def log(message: str) -> None:
    print(f"[failover] {message}", file=sys.stderr, flush=True)


class Operator:
    def __init__(self, kubeconfig: Path, name: str, log_dir: Path, election: list[str]) -> None:
        self.name = name
        self.port = free_port()
        command = [
            sys.executable,
            "-P",
            "-m",
            "lmoperator",
            "operator",
            "--namespace",
            NAMESPACE,
            "--metrics-port",
            str(self.port),
            *election,
        ]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": name}
        with (log_dir / f"{name}.log").open("ab") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )


def answers(port: int, path: str, expected: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return bool(answer.read().decode().strip() == expected)
    except OSError:
        return False


class Cluster:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.core: Any = kubernetes.client.CoreV1Api(api)
        self.custom: Any = kubernetes.client.CustomObjectsApi(api)

    def holder(self) -> str:
        try:
            lease = self.custom.get_namespaced_custom_object(
                LEASE.group, LEASE.version, NAMESPACE, LEASE.plural, LEASE_NAME
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return ""
            raise
        return str(lease.get("spec", {}).get("holderIdentity") or "")

    def create_job(self, name: str) -> None:
        doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
        doc["metadata"]["name"] = name
        doc["spec"]["replicas"] = 1
        self.custom.create_namespaced_custom_object(
            TRAINING_JOB.group, TRAINING_JOB.version, NAMESPACE, TRAINING_JOB.plural, doc
        )

    def phase(self, name: str) -> str:
        job = self.custom.get_namespaced_custom_object(
            TRAINING_JOB.group, TRAINING_JOB.version, NAMESPACE, TRAINING_JOB.plural, name
        )
        return str((job.get("status") or {}).get("phase") or "")

    def scale(self, name: str, replicas: int) -> None:
        self.custom.patch_namespaced_custom_object(
            TRAINING_JOB.group,
            TRAINING_JOB.version,
            NAMESPACE,
            TRAINING_JOB.plural,
            name,
            {"spec": {"replicas": replicas}},
        )

    def pod_exists(self, name: str) -> bool:
        try:
            self.core.read_namespaced_pod(name, NAMESPACE)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def wait(what: str, predicate: Callable[[], bool], poll: float, timeout: float = TIMEOUT) -> float:
    """Poll until `predicate()`; the monotonic time at which it first held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll)


def first_times(
    events: dict[str, Callable[[], bool]], poll: float, timeout: float = TIMEOUT
) -> dict[str, float]:
    """Poll every event's predicate until each has held once; when each first held."""
    pending, found = dict(events), {}
    deadline = time.monotonic() + timeout
    while pending:
        for name, predicate in list(pending.items()):
            if predicate():
                found[name] = time.monotonic()
                del pending[name]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {', '.join(pending)}")
        if pending:
            time.sleep(poll)
    return found


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "stdev": round(statistics.stdev(samples), 3) if len(samples) > 1 else 0.0,
        "samples": [round(s, 3) for s in samples],
    }


def failovers(
    cluster: Cluster,
    kubeconfig: Path,
    log_dir: Path,
    mode: str,
    repeats: int,
    election: list[str],
    retry_period: float,
    poll: float,
) -> dict[str, Any]:
    """`repeats` failovers of the given mode; their figures."""
    ops = {name: Operator(kubeconfig, name, log_dir, election) for name in ("op-a", "op-b")}
    figures: dict[str, list[float]] = {"acquire_s": [], "first_action_s": [], "leader_exit_s": []}
    try:
        for index in range(repeats):
            holder = ""

            def has_holder() -> bool:
                nonlocal holder
                holder = cluster.holder()
                return any(holder.startswith(f"{n}_") for n in ops)

            wait("a leader", has_holder, poll)
            leader = next(n for n in ops if holder.startswith(f"{n}_"))
            standby = next(n for n in ops if n != leader)
            job = f"{mode}-{index}"
            cluster.create_job(job)
            wait(f"{job} Running", lambda job=job: cluster.phase(job) == "Running", poll)  # type: ignore[misc]
            port = ops[standby].port
            wait(f"{standby} standing by", lambda: answers(port, "/readyz", "standby"), poll)  # noqa: B023
            time.sleep(random.uniform(0, retry_period))
            process = ops[leader].process
            started = time.monotonic()
            process.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGTERM)
            cluster.scale(job, 2)
            seen = first_times(
                {
                    "acquire": lambda name=standby: cluster.holder().startswith(f"{name}_"),  # type: ignore[misc]
                    "action": lambda job=job: cluster.pod_exists(f"{job}-worker-1"),  # type: ignore[misc]
                    "exit": lambda p=process: p.poll() is not None,  # type: ignore[misc]
                },
                poll,
            )
            acquired, acted, exited = seen["acquire"], seen["action"], seen["exit"]
            figures["acquire_s"].append(acquired - started)
            figures["first_action_s"].append(acted - started)
            figures["leader_exit_s"].append(exited - started)
            log(
                f"{mode} {index + 1}/{repeats}: leader {leader} exited "
                f"{process.returncode}; standby {standby} led after {acquired - started:.2f}s, "
                f"acted after {acted - started:.2f}s"
            )
            ops[leader] = Operator(kubeconfig, leader, log_dir, election)
    finally:
        for op in ops.values():
            stop_process(op.process, timeout=20)
    result = {key: summary(values) for key, values in figures.items()}
    if mode == "kill":
        del result["leader_exit_s"]  # a SIGKILL ends it at once
    return result


def restarts(
    cluster: Cluster, kubeconfig: Path, log_dir: Path, repeats: int, poll: float
) -> dict[str, Any]:
    """The peer: one operator, killed and started again at once."""
    samples = []
    op = Operator(kubeconfig, "single", log_dir, [])
    try:
        for index in range(repeats):
            job = f"restart-{index}"
            cluster.create_job(job)
            wait(f"{job} Running", lambda job=job: cluster.phase(job) == "Running", poll)  # type: ignore[misc]
            started = time.monotonic()
            op.process.send_signal(signal.SIGKILL)
            cluster.scale(job, 2)
            op.process.wait()
            op = Operator(kubeconfig, "single", log_dir, [])
            acted = wait(
                f"{job}-worker-1",
                lambda job=job: cluster.pod_exists(f"{job}-worker-1"),  # type: ignore[misc]
                poll,
            )
            samples.append(acted - started)
            log(f"restart {index + 1}/{repeats}: acted after {acted - started:.2f}s")
    finally:
        stop_process(op.process, timeout=20)
    return {"first_action_s": summary(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="failovers of each kind")
    parser.add_argument("--lease-duration", type=int, default=15)
    parser.add_argument("--renew-deadline", type=float, default=10.0)
    parser.add_argument("--retry-period", type=float, default=2.0)
    parser.add_argument("--poll-ms", type=float, default=20.0, help="polling interval")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    args = parser.parse_args()
    poll = args.poll_ms / 1000
    election = [
        "--leader-elect",
        "--leader-election-namespace",
        NAMESPACE,
        "--leader-election-lease-duration",
        str(args.lease_duration),
        "--leader-election-renew-deadline",
        str(args.renew_deadline),
        "--leader-election-retry-period",
        str(args.retry_period),
    ]
    began = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="elasticlm-failover-"))
    figures: dict[str, Any] = {
        "bench": "failover",
        "lease_duration_s": args.lease_duration,
        "renew_deadline_s": args.renew_deadline,
        "retry_period_s": args.retry_period,
        "repeats": args.repeats,
        "poll_ms": args.poll_ms,
    }
    with devcluster_running(state / "devcluster", "--simulate") as (_, info):
        kubeconfig = Path(info["kubeconfig"])
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        stack = LocalStack(state, kubeconfig, str(info["url"]), api)
        stack.install_crds()
        cluster = Cluster(api)
        cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
        logs = state / "logs"
        logs.mkdir()
        for mode in ("kill", "term"):
            figures[mode] = failovers(
                cluster, kubeconfig, logs, mode, args.repeats, election, args.retry_period, poll
            )
        figures["restart"] = restarts(cluster, kubeconfig, logs, args.repeats, poll)
        api.close()
    figures["wall_s"] = round(time.monotonic() - began, 1)
    if args.keep:
        figures["state_dir"] = str(state)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
