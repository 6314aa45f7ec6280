"""LMTuningJob's algorithms on one real objective, and what early stopping saves.

The objective: the validation loss of a tiny Llama (2 layers, Bytes vocabulary, context
32) trained in-process for `--steps` steps on a synthetic corpus (lmworker.corpus, 200 kB,
5 % held out), one worker, fp32, one thread, measured every `--interval` steps (the curve
early stopping reads). Three parameters: learning rate (log, 1e-4..3e-2), warm-up steps
(0..20 by 5) and width (hidden size 32, 64 or 96). A point is trained once and cached,
so every algorithm and seed sees exactly the same objective; the JSON line states the
measured cost of one trial.

1. Algorithms: Random, Grid, Greedy, SimulatedAnnealing and Bayesian (TPE), each over
   `--seeds` paired seeds (seed s for every algorithm) with a fixed budget of `--trials`
   trials, through `lmoperator.tuning.search.suggest` exactly as the operator calls it
   (the study rebuilt from the records for every trial). Grid cannot take a log range
   without steps: it walks the learning rates 1e-4, 3e-4, ..., 3e-2 instead.
   Reported: the median over seeds of the best loss after n trials, and for Bayesian the
   trials it needed to reach Random's final best (median over seeds; target: at most
   half of Random's).
2. Early stopping: the Bayesian searches replayed with Median stopping (minSteps one
   interval, 2 completed trials) against no stopping, in worker-seconds (steps trained x
   the measured seconds per step of that point) to reach the best loss the unstopped
   search found. Replayed from the measured curves, not run on devcluster. The shared
   elastic budget is not part of this benchmark.

    .venv/bin/python bench/tuning.py [--seeds 10] [--trials 16] [--steps 40]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "manifests" / "examples" / "tuning-job.yaml"
ALGORITHMS = ["Random", "Grid", "Greedy", "SimulatedAnnealing", "Bayesian"]
GRID_RATES = ["0.0001", "0.0003", "0.001", "0.003", "0.01", "0.03"]


def spec_for(algorithm: str, seed: int, trials: int, stopping: bool) -> Any:
    from lmoperator.api import LMTuningJob, parse_resource

    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    rate: dict[str, Any] = {"name": "learningRate", "path": "training.learningRate"}
    if algorithm == "Grid":
        rate.update(type="Categorical", values=GRID_RATES)
    else:
        rate.update(type="Float", min=0.0001, max=0.03, log=True)
    doc["spec"]["parameters"] = [
        rate,
        {
            "name": "warmupSteps",
            "path": "training.warmupSteps",
            "type": "Int",
            "min": 0,
            "max": 20,
            "step": 5,
        },
        {
            "name": "width",
            "path": "model.size.hiddenSize",
            "type": "Categorical",
            "values": ["32", "64", "96"],
        },
    ]
    doc["spec"]["algorithm"] = {"name": algorithm, "seed": seed, "startupTrials": 4}
    doc["spec"]["budget"] = {"maxTrials": trials, "parallelTrials": 1}
    doc["spec"]["earlyStopping"] = (
        {"policy": "Median", "minSteps": 1, "minCompletedTrials": 2}
        if stopping
        else {"policy": "None"}
    )
    job = parse_resource(doc)
    assert isinstance(job, LMTuningJob)
    return job.spec


class Objective:
    """Train a point once; return its curve [(step, validation loss)] and s/step."""

    def __init__(self, workdir: Path, steps: int, interval: int) -> None:
        from lmworker.corpus import write_corpus

        self.workdir = workdir
        self.steps = steps
        self.interval = interval
        self.corpus = workdir / "corpus.txt"
        write_corpus(self.corpus, n_bytes=200_000, seed=0)
        self.cache: dict[tuple[float, int, int], tuple[list[tuple[int, float]], float]] = {}

    def __call__(self, params: dict[str, Any]) -> tuple[list[tuple[int, float]], float]:
        key = (float(params["learningRate"]), int(params["warmupSteps"]), int(params["width"]))
        if key not in self.cache:
            self.cache[key] = self._train(*key)
        return self.cache[key]

    def _train(self, lr: float, warmup: int, width: int) -> tuple[list[tuple[int, float]], float]:
        import torch

        from lmworker.config import ModelConfig, TrainingConfig, WorkerConfig
        from lmworker.trainer import Trainer

        cfg = WorkerConfig(
            job="bench",
            namespace="default",
            model=ModelConfig(
                vocab_size=257,
                layers=2,
                hidden_size=width,
                heads=4,
                kv_heads=2,
                intermediate_size=2 * width,
                context_length=32,
            ),
            training=TrainingConfig(
                steps=self.steps,
                global_batch_size=16,
                micro_batch_size=16,
                learning_rate=lr,
                warmup_steps=min(warmup, self.steps - 1),
                weight_decay=0.1,
                grad_clip=1.0,
                precision="fp32",
                sync="DDP",
                local_sgd_sync_steps=2,
                seed=1,
            ),
            data_path=str(self.corpus),
            validation_fraction=0.05,
        )
        trainer = Trainer(cfg, torch.device("cpu"))
        trainer.init_fresh()
        curve: list[tuple[int, float]] = []
        started = time.perf_counter()
        while trainer.step < self.steps:
            trainer.train_step(trainer.model, 0, 1, ddp=False)
            if trainer.step % self.interval == 0 or trainer.step == self.steps:
                loss = trainer.validation_loss()
                assert loss is not None
                curve.append((trainer.step, loss))
        return curve, (time.perf_counter() - started) / self.steps


def run_search(
    spec: Any, objective: Objective, trials: int, stopping: bool
) -> list[dict[str, Any]]:
    """The trials one after another, each suggested from a study rebuilt from the records;
    with `stopping`, a trial is replayed checkpoint by checkpoint and stopped where the
    median rule says so."""
    from lmoperator.api.tuningjob import TrialState
    from lmoperator.tuning.search import Observation, stop_reason, suggest

    done: list[Observation] = []
    rows: list[dict[str, Any]] = []
    for number in range(trials):
        params = suggest(spec, done)
        curve, seconds_per_step = objective(params)
        state, history = TrialState.SUCCEEDED, curve
        if stopping:
            for i in range(1, len(curve) + 1):
                running = Observation(number, params, TrialState.RUNNING, None, tuple(curve[:i]))
                if i < len(curve) and stop_reason(spec, [*done, running], number):
                    state, history = TrialState.EARLY_STOPPED, curve[:i]
                    break
        value = history[-1][1] if state == TrialState.SUCCEEDED else None
        done.append(Observation(number, params, state, value, tuple(history)))
        rows.append(
            {
                "value": value,
                "steps": history[-1][0],
                "worker_seconds": history[-1][0] * seconds_per_step,
            }
        )
    return rows


def best_after(rows: list[dict[str, Any]]) -> list[float]:
    best, out = math.inf, []
    for r in rows:
        if r["value"] is not None:
            best = min(best, r["value"])
        out.append(best)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--interval", type=int, default=10)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        objective = Objective(Path(tmp), args.steps, args.interval)
        curves: dict[str, list[list[float]]] = {}
        for algorithm in ALGORITHMS:
            curves[algorithm] = []
            for seed in range(args.seeds):
                rows = run_search(
                    spec_for(algorithm, seed, args.trials, False), objective, args.trials, False
                )
                curves[algorithm].append(best_after(rows))
            print(f"{algorithm}: done ({len(objective.cache)} points trained)", file=sys.stderr)
        # Bayesian vs Random, paired by seed: trials to reach Random's final best.
        needed = []
        for bayes, rand in zip(curves["Bayesian"], curves["Random"], strict=True):
            target = rand[-1]
            needed.append(
                next((i + 1 for i, v in enumerate(bayes) if v <= target), args.trials + 1)
            )
        # Early stopping, replayed on the Bayesian searches.
        saved = []
        for seed in range(args.seeds):
            plain = run_search(
                spec_for("Bayesian", seed, args.trials, False), objective, args.trials, False
            )
            stopped = run_search(
                spec_for("Bayesian", seed, args.trials, True), objective, args.trials, True
            )
            target = min(r["value"] for r in plain if r["value"] is not None)

            def seconds_to(rows: list[dict[str, Any]], goal: float) -> float | None:
                total = 0.0
                for r in rows:
                    total += r["worker_seconds"]
                    if r["value"] is not None and r["value"] <= goal + 1e-12:
                        return total
                return None

            base = seconds_to(plain, target)
            with_stopping = seconds_to(stopped, target)
            saved.append(
                {
                    "baseline": base,
                    "median_stopping": with_stopping,
                    "ratio": None if with_stopping is None or not base else with_stopping / base,
                }
            )
        trial_seconds = statistics.median(c[1] * args.steps for c in objective.cache.values())
    ratios = [s["ratio"] for s in saved if s["ratio"] is not None]
    result = {
        "bench": "tuning",
        "objective": f"tiny Llama, {args.steps} steps, validation loss every {args.interval}",
        "seeds": args.seeds,
        "trials": args.trials,
        "points_trained": len(objective.cache),
        "trial_seconds_median": round(trial_seconds, 3),
        "median_best_after": {
            a: {
                n: round(statistics.median(c[n - 1] for c in curves[a]), 4)
                for n in sorted({n for n in (4, 8, 12, args.trials) if n <= args.trials})
            }
            for a in ALGORITHMS
        },
        "bayesian_trials_to_random_final_best_median": statistics.median(needed),
        "early_stopping_runs_reaching_the_best": len(ratios),
        "early_stopping_worker_seconds_ratio_median": (
            round(statistics.median(ratios), 3) if ratios else None
        ),
        "replayed": "from measured per-trial loss curves, not on devcluster",
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
