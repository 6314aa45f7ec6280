"""The elastic runtime without Kubernetes: a rendezvous process and worker processes.

Rank 0 (the lowest index, here always worker 0) logs every step it completes, so its
log shows directly whether a membership change skipped or redid any step. The store is
behind its authenticating proxy, as in a job's pods: every process gets the job's secret.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lmoperator.localstack import free_port
from lmworker.config import (
    EXIT_PERMANENT,
    SECRET_FILE_ENV,
    ModelConfig,
    TrainingConfig,
    WorkerConfig,
    default_intermediate_size,
)
from lmworker.corpus import write_corpus
from lmworker.storeauth import new_secret
from tests.waiting import wait_for

# Enough steps at about 0.05 s each for a newcomer to start Python and torch (~5 s)
# twice while the others train.
STEPS = 600


class Cluster:
    def __init__(self, tmp: Path, steps: int, sync: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.net = f"127.{random.randint(40, 250)}.{random.randint(0, 250)}"
        corpus = tmp / "corpus.txt"
        write_corpus(corpus, n_bytes=300_000, seed=2)
        model = ModelConfig(
            vocab_size=257,
            layers=2,
            hidden_size=64,
            heads=4,
            kv_heads=2,
            intermediate_size=default_intermediate_size(64),
            context_length=64,
        )
        training = TrainingConfig(
            steps=steps,
            global_batch_size=12,
            micro_batch_size=2,
            learning_rate=3e-3,
            warmup_steps=5,
            weight_decay=0.1,
            grad_clip=1.0,
            precision="fp32",
            sync=sync,
            local_sgd_sync_steps=4,
            seed=5,
        )
        self.config = WorkerConfig(
            job="rt",
            namespace="default",
            model=model,
            training=training,
            data_path=str(corpus),
            checkpoint_dir=str(tmp / "ckpt"),
            checkpoint_interval_steps=25,
            min_replicas=1,
            max_replicas=3,
        )
        self.step_log = tmp / "steps.jsonl"
        self.secret_file = tmp / "rdzv-token"
        self.secret_file.write_text(new_secret())
        self.procs: list[subprocess.Popen[bytes]] = []
        self.rdzv = self.start_rendezvous()

    def start_rendezvous(self, tag: str = "") -> subprocess.Popen[bytes]:
        args = ["lmworker.rendezvous", "--host", "127.0.0.1", "--port", str(self.port)]
        env = {SECRET_FILE_ENV: str(self.secret_file)}
        return self._spawn(f"rdzv{tag}", [*args, "--min-nodes", "1", "--max-nodes", "3"], env)

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def worker(
        self, index: int, expected: int, tag: str = "", secret_file: Path | None = None
    ) -> subprocess.Popen[bytes]:
        env = {
            SECRET_FILE_ENV: str(secret_file or self.secret_file),
            "ELASTICLM_CONFIG": self.config.to_json(),
            "ELASTICLM_RDZV_ADDR": f"127.0.0.1:{self.port}",
            "ELASTICLM_INDEX": str(index),
            "ELASTICLM_EXPECTED_REPLICAS": str(expected),
            "POD_IP": f"{self.net}.{10 + index}",
            "POD_NAME": f"w{index}{tag}",
            "ELASTICLM_THREADS": "1",
            "ELASTICLM_STEP_LOG": str(self.step_log),
            "ELASTICLM_METRICS_PORT": str(free_port()),
        }
        return self._spawn(f"w{index}{tag}", ["lmworker.train"], env)

    def steps(self) -> list[dict[str, Any]]:
        if not self.step_log.exists():
            return []
        return [json.loads(line) for line in self.step_log.read_text().splitlines() if line]

    def wait(
        self, what: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 120.0
    ) -> None:
        def logs() -> str:
            return (
                what
                + "\n"
                + "\n".join(
                    f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
                    for f in sorted(self.tmp.glob("*.log"))
                )
            )

        wait_for(lambda: done(self.steps()), timeout, logs, interval=0.1)

    def world_size_reaches(self, size: int, after: int) -> None:
        self.wait(
            f"world size {size} after step {after}",
            lambda s: any(r["world_size"] == size and r["step"] > after for r in s),
        )

    def last_step(self) -> int:
        steps = self.steps()
        return int(steps[-1]["step"]) if steps else 0

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(steps: int, sync: str = "DDP") -> Cluster:
        c = Cluster(tmp_path, steps, sync)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.mark.timeout(300)  # trains through four membership changes
def test_join_leave_kill_and_rejoin_lose_no_step(cluster_factory: Callable[..., Cluster]) -> None:
    c = cluster_factory(steps=STEPS)
    w0, w1 = c.worker(0, expected=2), c.worker(1, expected=2)
    c.wait("training at 2", lambda s: len(s) >= 10)
    w2 = c.worker(2, expected=3)  # join
    c.world_size_reaches(3, c.last_step())
    w2.send_signal(signal.SIGTERM)  # graceful leave, as on scale-down
    c.world_size_reaches(2, c.last_step())
    assert w2.wait(timeout=60) == 0
    os.kill(w1.pid, signal.SIGKILL)  # failure
    c.world_size_reaches(1, c.last_step())
    c.worker(1, expected=2, tag="-again")  # replaced, as the operator does
    c.world_size_reaches(2, c.last_step())
    assert w0.wait(timeout=180) == 0
    steps = [r["step"] for r in c.steps()]
    # Every step exactly once, in order: nothing skipped, nothing redone.
    assert steps == list(range(1, STEPS + 1))
    assert {r["world_size"] for r in c.steps()} == {1, 2, 3}
    losses = [r["loss"] for r in c.steps()]
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    ckpt = Path(c.config.checkpoint_dir or "")
    assert (ckpt / f"step-{STEPS:08d}").is_dir()
    assert (ckpt / "export" / "model.safetensors").is_file()


def test_everyone_leaving_saves_a_checkpoint_and_a_restart_resumes(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """With LocalSGD, whose models differ between averages: they are averaged first."""
    c = cluster_factory(steps=STEPS, sync="LocalSGD")
    workers = [c.worker(i, expected=2) for i in range(2)]
    c.wait("some steps", lambda s: len(s) >= 12)
    for w in workers:
        w.send_signal(signal.SIGTERM)  # suspend or preemption
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    last = c.last_step()
    saved = max(
        int(p.name.split("-")[1]) for p in Path(c.config.checkpoint_dir or "").glob("step-*")
    )
    assert saved == last  # the final checkpoint holds the last completed step
    c.worker(0, expected=1, tag="-resumed")
    c.wait("resumed", lambda s: s[-1]["step"] > last)
    steps = [r["step"] for r in c.steps()]
    assert steps[:last] == list(range(1, last + 1))
    assert steps[last] == last + 1  # continued from the checkpoint: nothing redone


def test_a_restarted_rendezvous_costs_no_step(cluster_factory: Callable[..., Cluster]) -> None:
    """The store only matters while a round forms: training goes on, then re-forms."""
    c = cluster_factory(steps=300)
    workers = [c.worker(i, expected=2) for i in range(2)]
    c.wait("some steps", lambda s: len(s) >= 20)
    os.killpg(c.rdzv.pid, signal.SIGKILL)
    c.rdzv.wait()
    before = c.last_step()
    c.wait("training on without the store", lambda s: s[-1]["step"] > before)
    c.rdzv = c.start_rendezvous("-again")
    c.wait("training on", lambda s: s[-1]["step"] > before + 5)
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    steps = [r["step"] for r in c.steps()]
    assert steps == list(range(1, 301))
    # The group re-formed with the new store (whose rounds count from 1 again).
    formed = (c.tmp / "w0.log").read_text().count("round 1 formed")
    assert formed == 2


def test_a_worker_with_another_secret_is_refused_and_training_goes_on(
    cluster_factory: Callable[..., Cluster],
) -> None:
    c = cluster_factory(steps=STEPS)
    w0 = c.worker(0, expected=1)
    c.wait("training at 1", lambda s: len(s) >= 5)
    wrong = c.tmp / "other-job-token"
    wrong.write_text(new_secret())
    intruder = c.worker(1, expected=2, secret_file=wrong)
    assert intruder.wait(timeout=120) == EXIT_PERMANENT
    log = (c.tmp / "w1.log").read_text()
    assert "the rendezvous refused this pod's secret" in log
    rdzv_log = (c.tmp / "rdzv.log").read_text()
    assert "Refused a rendezvous connection without the job's secret" in rdzv_log
    assert "(index 1) registered" not in rdzv_log  # it never reached the store
    before = c.last_step()
    c.wait("training on alone", lambda s: s[-1]["step"] > before + 5)
    assert {r["world_size"] for r in c.steps()} == {1}
    os.kill(w0.pid, signal.SIGTERM)
    assert w0.wait(timeout=60) == 0


@pytest.mark.timeout(120)
def test_pods_of_two_processes_join_and_leave_as_one(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """worker.processesPerPod: 2 pods x 2 processes train at world size 4; one pod is
    scaled away (SIGTERM to its main process) and training goes on at world size 2."""
    steps = 100
    c = cluster_factory(steps=steps)
    c.config = dataclasses.replace(c.config, processes_per_pod=2)
    pods = [c.worker(i, expected=2) for i in range(2)]
    c.world_size_reaches(4, 0)
    assert {r["world_size"] for r in c.steps()} == {4}  # whole pods only, never 2 or 3
    pods[1].send_signal(signal.SIGTERM)
    c.world_size_reaches(2, c.last_step())
    assert pods[1].wait(timeout=60) == 0
    assert pods[0].wait(timeout=90) == 0
    records = c.steps()
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    assert {r["world_size"] for r in records} == {4, 2}
    log = (c.tmp / "rdzv.log").read_text()
    assert "2 workers x 2 processes" in log
    # Both processes of the pod that stayed are in every round: ranks 0 and 1 of pod 0.
    w0 = (c.tmp / "w0.log").read_text()
    assert "[local 1]" in w0
    assert "rank 1 of 2" in w0


@pytest.mark.timeout(120)
def test_a_crashed_process_takes_its_whole_pod_out(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """One process of a pod dies: its sibling is stopped, the pod exits non-zero (to be
    replaced) and the other pod trains on alone."""
    steps = 120
    c = cluster_factory(steps=steps)
    c.config = dataclasses.replace(c.config, processes_per_pod=2)
    pods = [c.worker(i, expected=2) for i in range(2)]
    c.world_size_reaches(4, 0)
    child = _local_process(pods[1].pid, local_rank=1)
    os.kill(child, signal.SIGKILL)
    assert pods[1].wait(timeout=60) == 128 + signal.SIGKILL
    c.world_size_reaches(2, c.last_step())
    assert pods[0].wait(timeout=90) == 0
    assert [r["step"] for r in c.steps()] == list(range(1, steps + 1))


def _local_process(pod_pid: int, local_rank: int) -> int:
    """The pid of the pod main process' child that runs `local_rank`."""
    children = Path(f"/proc/{pod_pid}/task/{pod_pid}/children").read_text().split()
    for pid in children:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"LOCAL_RANK={local_rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no process of local rank {local_rank} under {pod_pid}")


@pytest.mark.timeout(180)
def test_the_torchrun_path_measures_the_held_out_loss_at_checkpoints(tmp_path: Path) -> None:
    """`lmworker.train --torchrun` at world size 2 (the environment torchrun gives its
    workers, without the agent): both ranks measure their share of the held-out loss at
    each checkpoint, and rank 0 reports it, as the elastic runtime does."""
    c = Cluster(tmp_path, steps=20, sync="DDP")
    c.rdzv.kill()  # torchrun's workers need no rendezvous of ours
    c.rdzv.wait()
    c.config = dataclasses.replace(c.config, validation_fraction=0.05, checkpoint_interval_steps=10)
    master = free_port()
    try:
        for rank in range(2):
            env = {
                "ELASTICLM_CONFIG": c.config.to_json(),
                "ELASTICLM_THREADS": "1",
                "ELASTICLM_STEP_LOG": str(c.step_log),
                "ELASTICLM_METRICS_PORT": str(free_port()),
                "POD_IP": f"{c.net}.{10 + rank}",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(master),
                "RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_RANK": "0",
                "LOCAL_WORLD_SIZE": "1",
            }
            c._spawn(f"t{rank}", ["lmworker.train", "--torchrun"], env)
        workers = c.procs[1:]
        wait_for(
            lambda: all(p.poll() is not None for p in workers),
            150,
            lambda: "\n".join(f.read_text() for f in sorted(tmp_path.glob("t*.log"))),
        )
        assert [p.returncode for p in workers] == [0, 0]
        rank0 = (tmp_path / "t0.log").read_text()
        assert "step 10 validation loss" in rank0
        assert "step 20 validation loss" in rank0
        progress = json.loads((tmp_path / "ckpt" / "progress.json").read_text())
        assert progress["step"] == 20
        assert progress["validation_loss"] is not None
    finally:
        c.close()
