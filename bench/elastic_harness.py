"""Shared by `bench/rescale.py` and `bench/recovery.py`: local elastic jobs, no Kubernetes.

One `python -m lmworker.rendezvous` process is the job's store (and, for our runtime,
its membership authority). A node is either one of our workers (`python -m
lmworker.train`) or a plain `torchrun` agent running `lmworker.train --torchrun`, with
the rendezvous process as the external c10d store. Every node gets its own loopback
address (127.A.B.(20+i), with A.B random per run, so that runs side by side do not
collide) because each worker serves metrics on POD_IP:9400. Rank 0
appends one JSON line per completed step to the step log; the benches read only that.

Every process started here carries a per-run tag in its environment; `Cluster.close`
kills every process with that tag (so also torchrun's workers, which run in sessions of
their own and are orphaned when their agent dies), plus every tree it started.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmworker.config import SECRET_FILE_ENV

PY = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
TAG_ENV = "ELASTICLM_BENCH_TAG"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- processes ------------------------------------------------------------------------


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry)] = int(fields[1])
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents first."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in parents or p == pid:
            out.append(p)
        todo.extend(children.get(p, []))
    return out


def tagged(tag: str) -> list[int]:
    """Processes whose environment carries this run's tag."""
    needle = f"{TAG_ENV}={tag}".encode()
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.append(int(entry))
    return out


def signal_pids(pids: list[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


# -- configuration ----------------------------------------------------------------------


def worker_config(
    data: Path,
    ckpt_dir: Path | None,
    checkpoint_interval: int,
    steps: int,
    validation_fraction: float = 0.0,
    checkpoint_keep: int = 3,
) -> str:
    """The benches' job: the tiny model, global batch 24 in micro-batches of 4."""
    from lmworker.config import (
        ModelConfig,
        TrainingConfig,
        WorkerConfig,
        default_intermediate_size,
    )

    model = ModelConfig(
        vocab_size=257,
        layers=2,
        hidden_size=128,
        heads=4,
        kv_heads=4,
        intermediate_size=default_intermediate_size(128),
        context_length=128,
    )
    training = TrainingConfig(
        steps=steps,
        global_batch_size=24,
        micro_batch_size=4,
        learning_rate=1e-3,
        warmup_steps=10,
        weight_decay=0.1,
        grad_clip=1.0,
        precision="fp32",
        sync="DDP",
        local_sgd_sync_steps=8,
        seed=1,
    )
    return WorkerConfig(
        job="bench",
        namespace="default",
        model=model,
        training=training,
        data_path=str(data),
        checkpoint_dir=str(ckpt_dir) if ckpt_dir else None,
        checkpoint_interval_steps=checkpoint_interval,
        checkpoint_keep=checkpoint_keep,
        validation_fraction=validation_fraction,
        min_replicas=1,
        max_replicas=3,
    ).to_json()


def make_corpus(path: Path, size: int = 1_000_000) -> None:
    subprocess.run(
        [PY, "-m", "lmworker.corpus", "--out", str(path), "--bytes", str(size), "--seed", "1"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- the step log -----------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    t: float
    step: int
    world_size: int
    round: int


def read_steps(path: Path) -> list[Step]:
    if not path.exists():
        return []
    out: list[Step] = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        out.append(Step(float(r["t"]), int(r["step"]), int(r["world_size"]), int(r["round"])))
    return out


def step_seconds(steps: list[Step], world_size: int) -> list[float]:
    """Durations of consecutive steps of one round at this world size."""
    return [
        b.t - a.t
        for a, b in itertools.pairwise(steps)
        if a.world_size == b.world_size == world_size
        and a.round == b.round
        and b.step == a.step + 1
    ]


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


@dataclass(frozen=True)
class Change:
    """The first change of world size from `old` to `new` after `since`."""

    last_old: Step
    first_new: Step

    @property
    def downtime(self) -> float:
        return self.first_new.t - self.last_old.t

    @property
    def steps_lost(self) -> int:
        return self.last_old.step - self.first_new.step + 1


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the repeats (None where no repeat measured it)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def add_common_arguments(parser: argparse.ArgumentParser, steady_help: str) -> None:
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steady", type=int, default=12, help=steady_help)
    parser.add_argument("--checkpoint-interval", type=int, default=5)
    parser.add_argument(
        "--runtimes",
        default="ours,torchrun",
        help="comma-separated: ours, torchrun (rescale.py: also spare)",
    )
    parser.add_argument("--keep-logs", help="copy every process' log and step log here")


def run_repeats(
    name: str,
    args: argparse.Namespace,
    scenario: Callable[[str, Path, Path], dict[str, Any]],
) -> dict[str, list[dict[str, Any]]]:
    """`scenario(runtime, workdir, corpus)` for each repeat and runtime, alternating."""
    install_signal_cleanup()
    runtimes = args.runtimes.split(",")
    results: dict[str, list[dict[str, Any]]] = {r: [] for r in runtimes}
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        data = Path(tmp) / "corpus.txt"
        make_corpus(data)
        try:
            for i in range(args.repeats):
                for runtime in runtimes:
                    log(f"repeat {i + 1}/{args.repeats}: {runtime}")
                    results[runtime].append(scenario(runtime, Path(tmp) / f"{runtime}-{i}", data))
        finally:
            if args.keep_logs:
                shutil.copytree(tmp, args.keep_logs, dirs_exist_ok=True, ignore=bulky_files)
    return results


def bulky_files(_dir: str, names: list[str]) -> list[str]:
    """What `--keep-logs` leaves out: checkpoints and the corpus."""
    return [n for n in names if n in ("ckpt", "corpus.txt")]


def find_change(steps: list[Step], old: int, new: int, since: float) -> Change | None:
    first_new = next((s for s in steps if s.world_size == new and s.t > since), None)
    if first_new is None:
        return None
    before = [s for s in steps if s.world_size == old and s.t < first_new.t]
    if not before:
        return None
    last = max(before, key=lambda s: s.t)
    # The highest step completed at the old size: a restarted torchrun job can log
    # step numbers it had already passed.
    top = max(s.step for s in before)
    return Change(Step(last.t, top, old, last.round), first_new)


# -- a job ------------------------------------------------------------------------------


class Cluster:
    """One rendezvous process and the nodes of one job; `close` kills them all."""

    def __init__(
        self,
        runtime: str,
        workdir: Path,
        data: Path,
        checkpoint_interval: int,
        *,
        steps: int = 100_000,
        checkpoints: bool = True,
        validation_fraction: float = 0.0,
        checkpoint_keep: int = 3,
        secret: bool = False,
    ) -> None:
        """`secret`: the rendezvous requires a per-job secret, as the operator runs it
        (lmworker/storeauth.py); only our workers hold it (torchrun's c10d rendezvous
        cannot do the handshake). Runtime "spare": ours, with the job's secret (a
        spare's promotion needs it) and nodes that may start as warm spares."""
        assert runtime in ("ours", "spare", "torchrun")
        self.runtime = runtime
        self.dir = workdir
        self.dir.mkdir(parents=True)
        self.step_log = self.dir / "steps.log"
        self.tag = uuid.uuid4().hex
        self.port = free_port()
        self.net = f"127.{random.randint(100, 250)}.{random.randint(0, 250)}"
        self.config = worker_config(
            data,
            self.dir / "ckpt" if checkpoints else None,
            checkpoint_interval,
            steps=steps,
            validation_fraction=validation_fraction,
            checkpoint_keep=checkpoint_keep,
        )
        self.secret_file: Path | None = None
        if secret or runtime == "spare":
            from lmworker.storeauth import new_secret

            self.secret_file = self.dir / "rdzv-secret"
            self.secret_file.write_text(new_secret())
            self.secret_file.chmod(0o600)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.rdzv: subprocess.Popen[bytes] | None = None
        self._files: list[Any] = []

    def address(self, index: int) -> str:
        """Node `index`'s loopback address (its metrics are served there, on 9400)."""
        return f"{self.net}.{20 + index}"

    def _env(self, index: int, pod: str, expected: int, spare: bool = False) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                TAG_ENV: self.tag,
                "ELASTICLM_CONFIG": self.config,
                "ELASTICLM_RDZV_ADDR": f"127.0.0.1:{self.port}",
                "ELASTICLM_INDEX": str(index),
                "ELASTICLM_EXPECTED_REPLICAS": str(expected),
                "ELASTICLM_STEP_LOG": str(self.step_log),
                "ELASTICLM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                "POD_IP": self.address(index),
                "POD_NAME": pod,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.secret_file is not None and self.runtime != "torchrun":
            env[SECRET_FILE_ENV] = str(self.secret_file)
        if spare:
            env["ELASTICLM_SPARE"] = "1"
            del env["ELASTICLM_INDEX"]
        if self.runtime == "torchrun":
            # Without it a joining agent waits forever for MASTER_ADDR (FINDINGS.md).
            env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
            env["LOGLEVEL"] = "INFO"  # the agent's rendezvous decisions, in its log
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 (closed in close())
        self._files.append(out)
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_rendezvous(self, max_nodes: int) -> None:
        env = dict(os.environ)
        env[TAG_ENV] = self.tag
        cmd = [PY, "-m", "lmworker.rendezvous", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--min-nodes", "1", "--max-nodes", str(max_nodes)]
        if self.secret_file is not None:
            cmd += ["--secret-file", str(self.secret_file)]
        self.rdzv = self._spawn("rdzv", cmd, env)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError as exc:
                if self.rdzv.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the rendezvous did not start: see {self.dir}/rdzv.log"
                    ) from exc
                time.sleep(0.1)

    def start_node(
        self, index: int, expected: int, max_nodes: int, suffix: str = "", spare: bool = False
    ) -> float:
        """Launch node `index` (with `spare`, as a warm spare that stands by until it is
        promoted); return the launch time (time.time())."""
        name = f"node{index}{suffix}"
        env = self._env(index, f"w{index}{suffix}", expected, spare)
        if self.runtime in ("ours", "spare"):
            cmd = [PY, "-m", "lmworker.train"]
        else:
            cmd = [
                TORCHRUN,
                f"--nnodes=1:{max_nodes}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{self.port}",
                "--rdzv-conf=is_host=false",
                "--rdzv-id=bench",
                f"--local-addr={self.net}.{20 + index}",
                # The default, 0, ends the job at the first failed worker group, and a
                # departure fails the survivors' collectives.
                "--max-restarts=100",
                "-m",
                "lmworker.train",
                "--torchrun",
            ]
        t = time.time()
        self.procs[name] = self._spawn(name, cmd, env)
        return t

    def signal_node(self, name: str, sig: int) -> float:
        """Ours: the worker process. torchrun: the agent and its workers together."""
        proc = self.procs[name]
        pids = tree(proc.pid) if self.runtime == "torchrun" else [proc.pid]
        t = time.time()
        signal_pids(pids, sig)
        return t

    def steps(self) -> list[Step]:
        return read_steps(self.step_log)

    def wait_for(self, what: str, pred: Any, timeout: float) -> list[Step]:
        """Poll the step log until `pred(steps)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            steps = self.steps()
            if pred(steps):
                return steps
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.runtime}: no {what} within {timeout:g}s ({self.dir})")
            if self.rdzv is not None and self.rdzv.poll() is not None:
                raise RuntimeError(f"{self.runtime}: the rendezvous exited ({self.dir})")
            time.sleep(0.05)

    def close(self) -> None:
        pids: set[int] = set(tagged(self.tag))
        for proc in [*self.procs.values(), *([self.rdzv] if self.rdzv else [])]:
            if proc.poll() is None:
                pids.update(tree(proc.pid))
        signal_pids(sorted(pids), signal.SIGKILL)
        for proc in [*self.procs.values(), *([self.rdzv] if self.rdzv else [])]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"process {proc.pid} did not exit after SIGKILL")
        deadline = time.monotonic() + 10
        while tagged(self.tag) and time.monotonic() < deadline:
            signal_pids(tagged(self.tag), signal.SIGKILL)
            time.sleep(0.1)
        for f in self._files:
            f.close()


def install_signal_cleanup() -> None:
    """SIGTERM/SIGINT of the bench itself unwinds through the `finally` blocks."""

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def torch_version() -> str:
    import torch

    return str(torch.__version__).split("+")[0]
