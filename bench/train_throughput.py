"""Training throughput: the trainer's step and the whole runtime, each against its peers.

Two parts (`--parts loop,whole`); both train the same tiny Llama
(`lmworker.model.LlamaModel`: 2 layers, hidden 128, 4 heads, context 128, Bytes
vocabulary) on the same corpus with the same global batch (24 sequences) split the same
way (micro-batches of 4, gradient accumulation, DDP with `no_sync` on all but the last
micro-batch when there are several processes), AdamW with the same settings, gradient
clipping at 1.0, fp32, gloo, one thread per process.

loop: `Trainer.train_step` in-process against hand-written loops.

- trainer: exactly the runtime's per-step call, as `ElasticWorker._train_round` makes it
  (without the step log and the metrics): `Trainer.train_step(..., agree=...)`, whose
  agreement all-reduce of [loss, micro-batches, newer-round flag] overlaps the clipping
  and the optimizer step; the flag callable returns 0.0; then `result.global_loss()`.
- naive: a plain DDP loop; the batch is a slice of one precomputed permutation. Like any
  real loop that logs its loss, it reports the global loss of each step: one synchronous
  all-reduce of [loss sum, micro-batches] after the optimizer step. This is the peer of
  the target ratio.
- bare: the same loop without that all-reduce (it only looks at its local loss), as a
  floor.

All live in the same process(es), so they share the machine's state; measurements are
interleaved `--repeats` times for `--steps` steps each, after a warm-up, cycling
through the 6 orders of the 3 variants. Ratios are medians of the per-repeat ratios.

whole: the whole runtime as pods run it, from process start, at each of `--whole-worlds`.

- ours: `python -m lmworker.train` under `python -m lmworker.rendezvous` with the
  rendezvous secret switched on (every store connection through the authenticating
  forwarder and proxy, lmworker/storeauth.py), as the operator runs it;
- torchrun: the same job under plain `torchrun` (`lmworker.train --torchrun`, the c10d
  rendezvous on the same store process, which torchrun cannot authenticate to);
- ddp: the `naive` loop as a job of its own processes (`--ddp-job`), which logs each
  step the same way and, with checkpoints on, measures the held-out loss on rank 0 and
  saves model and optimizer with `torch.save` at the same interval.

Each runs `--warmup` + `--whole-steps` (+ 2) steps, with checkpoints and the held-out
loss every `--checkpoint-interval` steps (the example job's 50; validationFraction's
default 0.01) and again with neither. Figures are taken over steps warmup..warmup+steps
of rank 0's step log: wall seconds per step (the window's span over its steps, so
checkpoints count), the median step, and CPU seconds per step of all the job's
processes (rendezvous, forwarders and agents included). Per world size and repeat both
settings run (alternating which first), each with the three contenders in the next of
their 6 orders. Ratios are geometric means of the per-repeat ratios with a 95 % t
interval on their logs (Student's t, repeats - 1 degrees of freedom).

    .venv/bin/python bench/train_throughput.py [--parts loop,whole] [--repeats 10]
        [--steps 12] [--worlds 1,2] [--whole-repeats 3] [--whole-steps 100]
        [--warmup 10] [--whole-worlds 1,2,3] [--checkpoint-interval 50]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elastic_harness import (
    Cluster,
    Step,
    free_port,
    install_signal_cleanup,
    log,
    make_corpus,
    read_steps,
    tagged,
    torch_version,
    worker_config,
)

GLOBAL_BATCH = 24
MICRO_BATCH = 4


def config(data: str) -> Any:
    """The benches' tiny job, without checkpoints (nothing is saved here)."""
    from lmworker.config import WorkerConfig

    cfg = WorkerConfig.from_json(worker_config(Path(data), None, 100, steps=100_000))
    assert (cfg.training.global_batch_size, cfg.training.micro_batch_size) == (
        GLOBAL_BATCH,
        MICRO_BATCH,
    )
    return cfg


def child(rank: int, world: int, port: int, data: str, repeats: int, steps: int) -> None:
    """One process of the measurement; rank 0 prints the figures."""
    import torch
    import torch.distributed as dist
    from torch.nn import functional
    from torch.nn.parallel import DistributedDataParallel

    from lmworker.model import LlamaModel, init_weights
    from lmworker.trainer import Trainer

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    cfg = config(data)
    trainer = Trainer(cfg, torch.device("cpu"))
    trainer.init_fresh()
    t_module: torch.nn.Module = trainer.model
    if world > 1:
        t_module = DistributedDataParallel(trainer.model, broadcast_buffers=False)

    model = LlamaModel(cfg.model)
    init_weights(model, cfg.training.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=False
    )
    n_module: torch.nn.Module = model
    if world > 1:
        n_module = DistributedDataParallel(model, broadcast_buffers=False)
    tokens = trainer.train_data.tokens
    length = cfg.model.context_length
    offsets = torch.arange(length + 1)
    count = trainer.train_data.count
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    mine = list(range(rank, GLOBAL_BATCH // MICRO_BATCH, world))  # round robin, as ours
    naive_step = 0

    def run_trainer(n: int) -> None:
        for _ in range(n):
            result = trainer.train_step(t_module, rank, world, True, agree=lambda: 0.0)
            result.global_loss()
            if result.round_changed():
                raise RuntimeError("no newer round exists here")

    def naive_step_fn(global_loss: bool) -> None:
        nonlocal naive_step
        loss_sum = 0.0
        base = (naive_step * GLOBAL_BATCH) % (count - GLOBAL_BATCH)
        for i, which in enumerate(mine):
            idx = perm[base + which * MICRO_BATCH : base + (which + 1) * MICRO_BATCH]
            window = tokens[(idx * length)[:, None] + offsets[None, :]]
            inputs, targets = window[:, :-1], window[:, 1:]
            last = i == len(mine) - 1
            sync = world > 1 and not last
            ctx = n_module.no_sync() if sync else contextlib.nullcontext()  # type: ignore[operator]
            with ctx:
                logits = n_module(inputs)
                loss = functional.cross_entropy(
                    logits.view(-1, logits.size(-1)), targets.reshape(-1)
                )
                (loss * world / (GLOBAL_BATCH // MICRO_BATCH)).backward()  # type: ignore[no-untyped-call]
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if global_loss:
            reported = torch.tensor([loss_sum, float(len(mine))])
            dist.all_reduce(reported)
            float(reported[0] / reported[1])
        naive_step += 1

    def run_naive(n: int) -> None:
        for _ in range(n):
            naive_step_fn(global_loss=True)

    def run_bare(n: int) -> None:
        for _ in range(n):
            naive_step_fn(global_loss=False)

    runs = {"trainer": run_trainer, "naive": run_naive, "bare": run_bare}
    orders = list(itertools.permutations(runs))
    for fn in runs.values():
        fn(3)  # warm-up
    figures: dict[str, list[float]] = {name: [] for name in runs}
    tokens_per_run = steps * GLOBAL_BATCH * length
    for rep in range(repeats):
        for name in orders[rep % len(orders)]:
            dist.barrier()
            t0 = time.perf_counter()
            runs[name](steps)
            dist.barrier()
            figures[name].append(tokens_per_run / (time.perf_counter() - t0))
    if rank == 0:
        print(json.dumps(figures), flush=True)
    dist.destroy_process_group()


def ddp_job(rank: int, world: int, port: int, config_json: str, step_log: str) -> None:
    """One process of the plain DDP job: the `naive` loop above as a script of its own,
    with rank 0 logging each step like our runtimes do and, when the job has a checkpoint
    directory, measuring the held-out loss and saving model and optimizer (`torch.save`,
    atomically) every `checkpoint_interval_steps` steps, as our runtime does there."""
    import torch
    import torch.distributed as dist
    from torch.nn import functional
    from torch.nn.parallel import DistributedDataParallel

    from lmworker.config import WorkerConfig
    from lmworker.model import LlamaModel, init_weights
    from lmworker.trainer import Trainer

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    cfg = WorkerConfig.from_json(config_json)
    data = Trainer(cfg, torch.device("cpu"))  # only its tokens and held-out split
    model = LlamaModel(cfg.model)
    init_weights(model, cfg.training.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=False
    )
    module: torch.nn.Module = model
    if world > 1:
        module = DistributedDataParallel(model, broadcast_buffers=False)
    tokens = data.train_data.tokens
    length = cfg.model.context_length
    offsets = torch.arange(length + 1)
    count = data.train_data.count
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    mine = list(range(rank, GLOBAL_BATCH // MICRO_BATCH, world))
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if ckpt is not None and rank == 0:
        ckpt.mkdir(parents=True, exist_ok=True)

    @torch.no_grad()
    def validation() -> float:
        held_out = data.validation_data
        assert held_out is not None
        model.eval()
        n, total = min(64, held_out.count), 0.0
        for first in range(0, n, MICRO_BATCH):
            idx = torch.arange(first, min(first + MICRO_BATCH, n))
            inputs, targets = held_out.batch(idx)
            logits = model(inputs)
            loss = functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
            total += float(loss) * len(idx)
        model.train()
        return total / n

    for step in range(1, cfg.training.steps + 1):
        loss_sum = 0.0
        base = ((step - 1) * GLOBAL_BATCH) % (count - GLOBAL_BATCH)
        for i, which in enumerate(mine):
            idx = perm[base + which * MICRO_BATCH : base + (which + 1) * MICRO_BATCH]
            window = tokens[(idx * length)[:, None] + offsets[None, :]]
            inputs, targets = window[:, :-1], window[:, 1:]
            sync = world > 1 and i < len(mine) - 1
            ctx = module.no_sync() if sync else contextlib.nullcontext()  # type: ignore[operator]
            with ctx:
                logits = module(inputs)
                loss = functional.cross_entropy(
                    logits.view(-1, logits.size(-1)), targets.reshape(-1)
                )
                (loss * world / (GLOBAL_BATCH // MICRO_BATCH)).backward()  # type: ignore[no-untyped-call]
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        reported = torch.tensor([loss_sum, float(len(mine))])
        dist.all_reduce(reported)
        if rank != 0:
            continue
        record = {"t": time.time(), "step": step, "world_size": world, "round": 0}
        record["loss"] = float(reported[0] / reported[1])
        with open(step_log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if ckpt is not None and step % cfg.checkpoint_interval_steps == 0:
            validation()
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            torch.save(state, ckpt / "checkpoint.pt.tmp")
            os.replace(ckpt / "checkpoint.pt.tmp", ckpt / "checkpoint.pt")
    dist.destroy_process_group()


def measure(world: int, data: Path, repeats: int, steps: int) -> dict[str, Any]:
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(world):
            cmd = [sys.executable, __file__, "--child", f"{rank},{world},{port}"]
            cmd += ["--data", str(data), "--repeats", str(repeats), "--steps", str(steps)]
            procs.append(
                subprocess.Popen(
                    cmd,
                    env=env,
                    stdout=subprocess.PIPE,
                    start_new_session=True,
                )
            )
        out, _ = procs[0].communicate(timeout=600)
        for p in procs[1:]:
            p.wait(timeout=60)
        if any(p.returncode for p in procs):
            raise RuntimeError(f"world {world}: a child failed: {[p.returncode for p in procs]}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    raw: dict[str, list[float]] = json.loads(out.decode().strip().splitlines()[-1])
    pairs = [t / n for t, n in zip(raw["trainer"], raw["naive"], strict=True)]
    bare_pairs = [t / b for t, b in zip(raw["trainer"], raw["bare"], strict=True)]
    return {
        "trainer_tokens_per_s": round(statistics.median(raw["trainer"]), 1),
        "naive_tokens_per_s": round(statistics.median(raw["naive"]), 1),
        "bare_tokens_per_s": round(statistics.median(raw["bare"]), 1),
        "ratio": round(statistics.median(pairs), 3),
        "ratio_min": round(min(pairs), 3),
        "ratio_max": round(max(pairs), 3),
        "ratio_vs_bare": round(statistics.median(bare_pairs), 3),
        "ratio_vs_bare_min": round(min(bare_pairs), 3),
        "ratio_vs_bare_max": round(max(bare_pairs), 3),
        "trainer_runs": [round(x, 1) for x in raw["trainer"]],
        "naive_runs": [round(x, 1) for x in raw["naive"]],
        "bare_runs": [round(x, 1) for x in raw["bare"]],
    }


# -- the whole runtime ----------------------------------------------------------------

CONTENDERS = ("ours", "torchrun", "ddp")
# The example job's (manifests/examples/training-job.yaml) checkpoint interval and
# spec.data.validationFraction's default: the held-out loss is measured at every
# checkpoint.
EXAMPLE_CHECKPOINT_INTERVAL = 50
EXAMPLE_KEEP = 2
VALIDATION_FRACTION = 0.01
RUN_TIMEOUT = 300.0
# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
        2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069,
        2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def ratio_interval(numerator: list[float], denominator: list[float]) -> dict[str, Any]:
    """Geometric mean of the paired ratios and its 95 % confidence interval: a t interval
    on the logs of the per-repeat ratios (each repeat ran both contenders back to back)."""
    logs = [math.log(a / b) for a, b in zip(numerator, denominator, strict=True)]
    mean = statistics.fmean(logs)
    out: dict[str, Any] = {"ratio": round(math.exp(mean), 3)}
    if len(logs) >= 2:
        half = (
            T975[min(len(logs) - 1, len(T975)) - 1] * statistics.stdev(logs) / math.sqrt(len(logs))
        )
        out["ci95"] = [round(math.exp(mean - half), 3), round(math.exp(mean + half), 3)]
    out["runs"] = [round(math.exp(x), 3) for x in logs]
    return out


def window_seconds(
    steps: list[Step], world: int, first: int, last: int
) -> tuple[float, float] | None:
    """(Mean, median) seconds per step over steps first+1..last of rank 0's step log,
    checkpoints included; None until all of them are logged, at this world size, in one
    round."""
    by_step = {s.step: s for s in steps}
    window = [by_step.get(n) for n in range(first, last + 1)]
    if any(s is None for s in window):
        return None
    done = [s for s in window if s is not None]
    if {(s.world_size, s.round) for s in done} != {(world, done[0].round)}:
        raise RuntimeError(f"the window of steps {first}..{last} spans a change of round")
    durations = [b.t - a.t for a, b in itertools.pairwise(done)]
    return (done[-1].t - done[0].t) / (last - first), statistics.median(durations)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time these processes have used so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RunFigures:
    step_s: float  # mean wall seconds per step over the window, checkpoints included
    median_step_s: float
    cpu_s_per_step: float  # CPU seconds of all the job's processes per step


def wait_window(
    step_log: Path,
    world: int,
    first: int,
    last: int,
    alive: Callable[[], bool],
    processes: Callable[[], list[int]],
    where: Path,
) -> RunFigures:
    """Poll the step log until the window is complete. The job's CPU time is read when
    the log first shows a step at or after `first` and again when it shows `last`."""
    deadline = time.monotonic() + RUN_TIMEOUT
    cpu_start: tuple[int, float] | None = None
    while True:
        steps = read_steps(step_log)
        newest = max((s.step for s in steps), default=0)
        if cpu_start is None and newest >= first:
            cpu_start = (newest, cpu_seconds(processes()))
        figures = window_seconds(steps, world, first, last)
        if figures is not None and cpu_start is not None:
            cpu_end = cpu_seconds(processes())
            newest = max(s.step for s in read_steps(step_log))
            per_step = (cpu_end - cpu_start[1]) / max(1, newest - cpu_start[0])
            return RunFigures(figures[0], figures[1], per_step)
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"steps {first}..{last} not logged in time: see {where}")
        time.sleep(0.1)


def whole_run(
    contender: str,
    world: int,
    workdir: Path,
    data: Path,
    checkpoints: bool,
    warmup: int,
    steps: int,
    interval: int,
) -> RunFigures:
    """One job of `world` processes from launch until steps warmup..warmup+steps are
    logged; its figures over that window."""
    total = warmup + steps + 2  # the final checkpoint and export lie outside the window
    if contender in ("ours", "torchrun"):
        cluster = Cluster(
            contender,
            workdir,
            data,
            interval,
            steps=total,
            checkpoints=checkpoints,
            validation_fraction=VALIDATION_FRACTION,
            checkpoint_keep=EXAMPLE_KEEP,
            secret=contender == "ours",
        )
        try:
            cluster.start_rendezvous(max_nodes=world)
            for index in range(world):
                cluster.start_node(index, expected=world, max_nodes=world)
            rdzv = cluster.rdzv
            return wait_window(
                cluster.step_log,
                world,
                warmup,
                warmup + steps,
                lambda: rdzv is not None and rdzv.poll() is None,
                lambda: tagged(cluster.tag),
                workdir,
            )
        finally:
            cluster.close()
    workdir.mkdir(parents=True)
    step_log = workdir / "steps.log"
    cfg = worker_config(
        data,
        workdir / "ckpt" if checkpoints else None,
        interval,
        steps=total,
        validation_fraction=VALIDATION_FRACTION,
    )
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for rank in range(world):
            out = open(workdir / f"ddp{rank}.log", "wb")  # noqa: SIM115 (closed below)
            logs.append(out)
            cmd = [sys.executable, __file__, "--ddp-job", f"{rank},{world},{port}"]
            cmd += ["--data", cfg, "--step-log", str(step_log)]
            procs.append(
                subprocess.Popen(
                    cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        return wait_window(
            step_log,
            world,
            warmup,
            warmup + steps,
            lambda: all(p.poll() in (None, 0) for p in procs),
            lambda: [p.pid for p in procs],
            workdir,
        )
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for f in logs:
            f.close()


def targets(wall: dict[str, Any]) -> bool:
    """Issue 13's targets: the upper ends of the 95 % intervals of the wall-time ratios."""
    return bool(
        "ci95" in wall["ours_vs_torchrun"]
        and wall["ours_vs_torchrun"]["ci95"][1] <= 1.03
        and wall["ours_vs_ddp"]["ci95"][1] <= 1.05
    )


def measure_whole(
    world: int, tmp: Path, data: Path, repeats: int, warmup: int, steps: int, interval: int
) -> dict[str, Any]:
    """Interleaved: per repeat, both settings (alternating which goes first), and within
    each the three contenders in the next of their 6 orders."""
    orders = list(itertools.permutations(CONTENDERS))
    settings = {"checkpoints": True, "no_checkpoints": False}
    raw: dict[str, dict[str, list[RunFigures]]] = {
        name: {c: [] for c in CONTENDERS} for name in settings
    }
    for rep in range(repeats):
        names = list(settings) if rep % 2 == 0 else list(reversed(settings))
        for name in names:
            for contender in orders[(rep + world) % len(orders)]:
                where = tmp / f"w{world}-{name}-{rep}-{contender}"
                run = whole_run(
                    contender, world, where, data, settings[name], warmup, steps, interval
                )
                raw[name][contender].append(run)
                log(
                    f"world {world} {name} repeat {rep + 1}/{repeats} {contender}: "
                    f"{run.step_s:.4f} s/step (median {run.median_step_s:.4f}), "
                    f"{run.cpu_s_per_step:.4f} CPU s/step"
                )
                shutil.rmtree(where, ignore_errors=True)
    out: dict[str, Any] = {}
    for name in settings:
        runs = raw[name]
        wall = {c: [r.step_s for r in runs[c]] for c in CONTENDERS}
        cpu = {c: [r.cpu_s_per_step for r in runs[c]] for c in CONTENDERS}
        figures: dict[str, Any] = {}
        for c in CONTENDERS:
            figures[f"{c}_step_s"] = round(statistics.median(wall[c]), 4)
            figures[f"{c}_step_s_runs"] = [round(x, 4) for x in wall[c]]
            figures[f"{c}_median_step_s"] = round(
                statistics.median(r.median_step_s for r in runs[c]), 4
            )
            figures[f"{c}_cpu_s_per_step"] = round(statistics.median(cpu[c]), 4)
        for a, b in (("ours", "torchrun"), ("ours", "ddp"), ("torchrun", "ddp")):
            figures[f"{a}_vs_{b}"] = ratio_interval(wall[a], wall[b])
            figures[f"{a}_vs_{b}_cpu"] = ratio_interval(cpu[a], cpu[b])
        figures["targets_met"] = targets(figures)
        out[name] = figures
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        default="loop,whole",
        help="comma-separated: loop (Trainer.train_step "
        "in-process), whole (the whole runtime as processes)",
    )
    parser.add_argument("--repeats", type=int, default=10, help="loop: paired measurements")
    parser.add_argument("--steps", type=int, default=12, help="loop: steps per measurement")
    parser.add_argument("--worlds", default="1,2", help="loop: comma-separated process counts")
    parser.add_argument("--whole-repeats", type=int, default=3, help="whole: repeats")
    parser.add_argument(
        "--whole-steps", type=int, default=100, help="whole: steps measured per job"
    )
    parser.add_argument("--warmup", type=int, default=10, help="whole: steps before them")
    parser.add_argument(
        "--whole-worlds", default="1,2,3", help="whole: comma-separated world sizes"
    )
    parser.add_argument(
        "--checkpoint-interval",
        type=int,
        default=EXAMPLE_CHECKPOINT_INTERVAL,
        help="whole: checkpoint (and validation) interval in steps",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-job", help=argparse.SUPPRESS)
    parser.add_argument("--step-log", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rank, world, port = (int(x) for x in args.child.split(","))
        child(rank, world, port, args.data, args.repeats, args.steps)
        return
    if args.ddp_job:
        rank, world, port = (int(x) for x in args.ddp_job.split(","))
        ddp_job(rank, world, port, args.data, args.step_log)
        return
    parts = set(args.parts.split(","))
    if not parts or parts - {"loop", "whole"}:
        parser.error(f"--parts: {args.parts!r}: name one or both of loop, whole")
    install_signal_cleanup()
    started = time.monotonic()
    figures: dict[str, Any] = {"bench": "train_throughput"}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as name:
        tmp = Path(name)
        data = tmp / "corpus.txt"
        make_corpus(data)
        if "loop" in parts:
            for world in (int(w) for w in args.worlds.split(",")):
                log(f"world size {world}: {args.repeats} x {args.steps} steps per variant")
                figures[f"world{world}"] = measure(world, data, args.repeats, args.steps)
                log(f"world size {world}: {json.dumps(figures[f'world{world}'])}")
            figures["repeats"] = args.repeats
            figures["steps"] = args.steps
        if "whole" in parts:
            whole: dict[str, Any] = {
                "warmup": args.warmup,
                "steps": args.whole_steps,
                "repeats": args.whole_repeats,
                "checkpoint_interval": args.checkpoint_interval,
                "validation_fraction": VALIDATION_FRACTION,
                "rendezvous_secret": True,
            }
            for world in (int(w) for w in args.whole_worlds.split(",")):
                whole[f"world{world}"] = measure_whole(
                    world,
                    tmp,
                    data,
                    args.whole_repeats,
                    args.warmup,
                    args.whole_steps,
                    args.checkpoint_interval,
                )
                log(f"whole runtime, world size {world}: {json.dumps(whole[f'world{world}'])}")
            figures["whole_runtime"] = whole
    figures["tokens_per_step"] = GLOBAL_BATCH * 128
    figures["wall_s"] = round(time.monotonic() - started, 1)
    figures["torch"] = torch_version()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
