"""Training throughput: `lmworker.trainer.Trainer` vs a minimal hand-written loop.

All variants train the same tiny Llama (`lmworker.model.LlamaModel`: 2 layers, hidden
128, 4 heads, context 128, Bytes vocabulary) on the same corpus with the same global
batch (24 sequences) split the same way (micro-batches of 4, gradient accumulation, DDP
with `no_sync` on all but the last micro-batch when there are 2 processes), AdamW with
the same settings, gradient clipping at 1.0, fp32, gloo, one thread per process.

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

    .venv/bin/python bench/train_throughput.py [--repeats 10] [--steps 12] [--worlds 1,2]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from elastic_harness import (
    free_port,
    install_signal_cleanup,
    log,
    make_corpus,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="paired measurements")
    parser.add_argument("--steps", type=int, default=12, help="steps per measurement")
    parser.add_argument("--worlds", default="1,2", help="comma-separated process counts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rank, world, port = (int(x) for x in args.child.split(","))
        child(rank, world, port, args.data, args.repeats, args.steps)
        return
    install_signal_cleanup()
    started = time.monotonic()
    figures: dict[str, Any] = {"bench": "train_throughput"}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        data = Path(tmp) / "corpus.txt"
        make_corpus(data)
        for world in (int(w) for w in args.worlds.split(",")):
            log(f"world size {world}: {args.repeats} x {args.steps} steps per variant")
            figures[f"world{world}"] = measure(world, data, args.repeats, args.steps)
            log(f"world size {world}: {json.dumps(figures[f'world{world}'])}")
    figures["tokens_per_step"] = GLOBAL_BATCH * 128
    figures["repeats"] = args.repeats
    figures["steps"] = args.steps
    figures["wall_s"] = round(time.monotonic() - started, 1)
    figures["torch"] = torch_version()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
