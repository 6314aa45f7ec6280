"""GPU check: the elastic runtime's CUDA, nccl and gloo paths, run for real on a GPU.

The operator's workers choose nccl on a GPU, which the CPU-only test suite never runs.
This script runs the whole runtime as pods do (`python -m lmworker.train` under our
rendezvous, via `elastic_harness.Cluster`) with a SmolLM2-135M-shaped model (30 layers,
width 576, 9 heads, 3 KV heads, vocabulary 49152; random weights, so nothing is
downloaded) in bf16 autocast on the synthetic corpus:

1. one process on one GPU with nccl (the agreement all-reduce and every control
   collective on GPU tensors);
2. two processes sharing GPU 0 over gloo (nccl refuses one GPU used twice): the second
   joins a running job, so the state hand-over by broadcast runs too;
3. with two or more GPUs, two processes with nccl, one GPU each, the second joining.

It prints one JSON line: per run, the median step time with its 10th-90th percentile
spread, tokens/s and model FLOPs utilisation (MFU: 6 x parameters + attention per
token, PaLM's formula, over the GPU's dense bf16 peak; null for a GPU not in the table
unless `--peak-tflops` says it). Without a GPU it says so and exits 0.

Needs only torch, tokenizers and prometheus-client, so it runs from the source tree on
whatever machine has a GPU:

    PYTHONPATH=worker:bench python3 bench/gpu_check.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))

from elastic_harness import Cluster, log, make_corpus, step_seconds

# Dense bf16 peaks (FLOP/s) from the vendors' data sheets (SXM parts).
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
CONTEXT = 512
GLOBAL_BATCH = 32
MICRO_BATCH = 8


def smollm2_shaped(data: Path, steps: int) -> Any:
    """The benches' job with SmolLM2-135M's architecture, bf16, no checkpoints."""
    from lmworker.config import ModelConfig, TrainingConfig, WorkerConfig

    model = ModelConfig(
        vocab_size=49152,
        layers=30,
        hidden_size=576,
        heads=9,
        kv_heads=3,
        intermediate_size=1536,
        context_length=CONTEXT,
        rope_theta=100000.0,
    )
    training = TrainingConfig(
        steps=steps,
        global_batch_size=GLOBAL_BATCH,
        micro_batch_size=MICRO_BATCH,
        learning_rate=3e-4,
        warmup_steps=5,
        weight_decay=0.1,
        grad_clip=1.0,
        precision="bf16",
        sync="DDP",
        local_sgd_sync_steps=8,
        seed=1,
    )
    return WorkerConfig(
        job="gpu-check",
        namespace="default",
        model=model,
        training=training,
        data_path=str(data),
        min_replicas=1,
        max_replicas=2,
    )


def flops_per_token(cfg: Any) -> float:
    """PaLM's estimate: 6 x (matmul parameters) + 12 x layers x width x context."""
    m = cfg.model
    head_dim = m.hidden_size // m.heads
    attention = 2 * m.hidden_size * m.hidden_size + 2 * m.hidden_size * m.kv_heads * head_dim
    mlp = 3 * m.hidden_size * m.intermediate_size
    params = m.layers * (attention + mlp) + m.vocab_size * m.hidden_size  # the LM head
    return float(6 * params + 12 * m.layers * m.hidden_size * m.context_length)


def peak_flops(name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for key, value in PEAK_BF16.items():
        if key in name:
            return value
    return None


def summarise(seconds: list[float], skip: int, cfg: Any, peak: float | None) -> dict[str, Any]:
    """Median step time and its spread after `skip` warm-up steps; tokens/s; MFU."""
    steady = seconds[skip:]
    if len(steady) < 3:
        return {"error": f"only {len(steady)} steady steps were measured"}
    steady.sort()
    median = statistics.median(steady)
    tokens = cfg.training.global_batch_size * cfg.model.context_length
    tokens_per_s = tokens / median
    return {
        "steps_measured": len(steady),
        "step_s_median": round(median, 4),
        "step_s_p10": round(steady[len(steady) // 10], 4),
        "step_s_p90": round(steady[(len(steady) * 9) // 10], 4),
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(tokens_per_s * flops_per_token(cfg) / peak, 4) if peak else None,
    }


def precision_line(log_path: Path) -> str | None:
    for line in log_path.read_text(errors="replace").splitlines():
        if "Precision " in line:
            return line.split("Precision ", 1)[1].strip()
    return None


def run_job(
    work: Path,
    name: str,
    cfg: Any,
    data: Path,
    backend: str,
    gpus: list[str],
    join_after: int,
    measured_steps: int,
    timeout: float,
) -> tuple[dict[str, Any], Cluster]:
    """Node 0 alone, to the job's end. With two entries in `gpus`, node 1 joins after
    `join_after` steps, and both are sent SIGTERM after `measured_steps` together."""
    cluster = Cluster("ours", work / name, data, checkpoint_interval=10**6)
    cluster.config = cfg.to_json()
    saved = {k: os.environ.get(k) for k in ("ELASTICLM_DIST_BACKEND", "CUDA_VISIBLE_DEVICES")}
    os.environ["ELASTICLM_DIST_BACKEND"] = backend
    out: dict[str, Any] = {"backend": backend, "processes": len(gpus), "gpus": gpus}
    try:
        cluster.start_rendezvous(max_nodes=len(gpus))
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
        cluster.start_node(0, expected=1, max_nodes=len(gpus))
        if len(gpus) > 1:
            cluster.wait_for(
                f"step {join_after}",
                lambda s: any(x.step >= join_after for x in s),
                timeout,
            )
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus[1]
            joined = cluster.start_node(1, expected=2, max_nodes=len(gpus))
            steps = cluster.wait_for(
                f"{measured_steps} steps at world size 2",
                lambda s: sum(x.world_size == 2 for x in s) >= measured_steps,
                timeout,
            )
            first = next(x for x in steps if x.world_size == 2)
            out["join_to_first_step_s"] = round(first.t - joined, 2)
            # Both leave as at a scale-to-zero: the stop is agreed at a step boundary.
            for node in cluster.procs:
                cluster.signal_node(node, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in cluster.procs.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: the job did not finish within {timeout:g}s")
            time.sleep(0.2)
        codes = {n: p.returncode for n, p in cluster.procs.items()}
        out["exit_codes"] = codes
        out["precision"] = precision_line(cluster.dir / "node0.log")
        out["ok"] = all(code == 0 for code in codes.values())
        return out, cluster
    except BaseException:
        cluster.close()
        raise
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure(
    work: Path,
    label: str,
    cfg: Any,
    data: Path,
    backend: str,
    gpus: list[str],
    join_after: int,
    warmup: int,
    timeout: float,
    peak: float | None,
) -> dict[str, Any]:
    """One run, summarised; a failure is reported with the processes' last log lines."""
    cluster: Cluster | None = None
    try:
        steps = cfg.training.steps
        if len(gpus) > 1:  # runs until stopped
            cfg = replace(cfg, training=replace(cfg.training, steps=100_000))
        run, cluster = run_job(work, label, cfg, data, backend, gpus, join_after, steps, timeout)
        run.update(summarise(step_seconds(cluster.steps(), len(gpus)), warmup, cfg, peak))
    except Exception as exc:  # report it and go on to the next run
        run = {"backend": backend, "gpus": gpus, "ok": False, "error": str(exc)[:500]}
        for node in sorted((work / label).glob("*.log")):
            log(f"--- {node.name}\n{tail(node)}")
    finally:
        if cluster is not None:
            cluster.close()
    run = {"run": label, **run}
    log(json.dumps(run))
    return run


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def rehearse(args: argparse.Namespace) -> int:
    """The script's own plumbing on a CPU: gloo, a tiny model, 1 then 2 processes."""
    with tempfile.TemporaryDirectory(prefix="elasticlm-gpu-") as tmp:
        work = Path(tmp)
        data = work / "corpus.txt"
        make_corpus(data, size=300_000)
        base = smollm2_shaped(data, args.steps)
        tiny = replace(
            base.model,
            vocab_size=257,
            layers=2,
            hidden_size=64,
            heads=4,
            kv_heads=2,
            intermediate_size=128,
            context_length=64,
        )
        cfg = replace(base, model=tiny, training=replace(base.training, precision="fp32"))
        runs = []
        for label, gpus in (("cpu-1", ["0"]), ("cpu-2", ["0", "0"])):
            run = measure(work, label, cfg, data, "gloo", gpus, 8, 3, args.timeout, None)
            runs.append(run)
    print(json.dumps({"bench": "gpu_check", "rehearsal": True, "runs": runs}))
    return 0 if all(r["ok"] for r in runs) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per job")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the figures")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per job")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 peak")
    parser.add_argument(
        "--cpu-rehearsal",
        action="store_true",
        help="run the same plan on the CPU with gloo and a tiny model, to check the script",
    )
    args = parser.parse_args()
    # The workers and the corpus generator are subprocesses: they need the path too.
    worker_dir = str(Path(__file__).resolve().parents[1] / "worker")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (worker_dir, os.environ.get("PYTHONPATH")) if p
    )

    import torch

    result: dict[str, Any] = {"bench": "gpu_check", "torch": torch.__version__}
    if args.cpu_rehearsal:
        return rehearse(args)
    if not torch.cuda.is_available():
        result.update(gpu=None, ok=True, message="no CUDA device here: nothing to check")
        print(json.dumps(result))
        return 0
    name = torch.cuda.get_device_name(0)
    count = torch.cuda.device_count()
    peak = peak_flops(name, args.peak_tflops)
    result.update(
        gpu=name,
        gpus=count,
        capability=".".join(map(str, torch.cuda.get_device_capability(0))),
        peak_bf16_tflops=round(peak / 1e12, 1) if peak else None,
    )
    plans = [("nccl-1gpu", "nccl", ["0"]), ("gloo-2proc-gpu0", "gloo", ["0", "0"])]
    if count >= 2:
        plans.append(("nccl-2gpu", "nccl", ["0", "1"]))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="elasticlm-gpu-") as tmp:
        work = Path(tmp)
        data = work / "corpus.txt"
        make_corpus(data, size=4_000_000)
        for label, backend, gpus in plans:
            cfg = smollm2_shaped(data, args.steps)
            log(f"{label}: {backend}, {len(gpus)} process(es) on GPU(s) {','.join(gpus)}")
            join_after = args.warmup + 3
            runs.append(
                measure(
                    work,
                    label,
                    cfg,
                    data,
                    backend,
                    gpus,
                    join_after,
                    args.warmup,
                    args.timeout,
                    peak,
                )
            )
    result["flops_per_token"] = flops_per_token(smollm2_shaped(Path("-"), 1))
    result["runs"] = runs
    result["ok"] = all(r.get("ok") for r in runs)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
