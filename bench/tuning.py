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
2. Early stopping and the shared elastic budget against a Katib-like baseline, all with
   the Bayesian sampler, `--parallel` trials at a time on `--workers` workers, replayed on
   a wall clock from the measured curves (not run on devcluster):
   - katib: each trial on a fixed workers/parallel workers; Katib's medianstop with its
     defaults (start_step 4 reports, min_trials_required 3; the rule's value is the mean
     over succeeded trials of their first start_step reports, fixed when a trial starts);
   - median, successive_halving: the same fixed workers, the operator's rule
     (`lmoperator.tuning.search.stop_reason`; minSteps a third of the trial, as in the
     example; Median after 2 completed trials, SuccessiveHalving with reductionFactor 3);
   - median_shared, successive_halving_shared: the operator's rule and its allocation
     (`tuning.allocate`) of the shared workers, each trial elastic in
     [1, --trial-max-workers], recomputed at every checkpoint and trial start/end as the
     operator's passes are;
   - median_shared_free_rescale: rescales that cost nothing (a bound);
   - median_shared_alpha_scaling: world sizes above 1 by the alpha model, not measured.
   The clock (`Clock`): a step is our runtime's measured steady step at that world size
   (`--runtime-step`, from bench/recovery.py and bench/rescale.py), scaled by the point's
   in-process cost relative to the median point of part 1; a trial's start (2.98 s), a
   join (4.37 s, the trial training on) and a rescale's pause (0.42 s) cost what
   bench/rescale.py measured for the same runtime on the same machine.
   Worker-seconds: the integral over the wall clock of every worker the search holds
   (starting, joining, paused or training), from its start until a trial first finishes
   at or below the katib run's final best (per seed; "reached" counts the seeds where it
   did). With every worker busy, reaching the best sooner in wall-clock time costs fewer.

    .venv/bin/python bench/tuning.py [--seeds 10] [--trials 12] [--steps 90] [--interval 10]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "manifests" / "examples" / "tuning-job.yaml"
ALGORITHMS = ["Random", "Grid", "Greedy", "SimulatedAnnealing", "Bayesian"]
GRID_RATES = ["0.0001", "0.0003", "0.001", "0.003", "0.01", "0.03"]


def spec_for(
    algorithm: str,
    seed: int,
    trials: int,
    stopping: str,
    shared: dict[str, int] | None = None,
) -> Any:
    """The LMTuningJob spec of one search: the example's template over the three
    parameters, with early stopping `stopping` ("None", "Median" or "SuccessiveHalving").
    With `shared` (parallel, workers, min, max, steps, interval): that many trials at once
    sharing that many workers, each trial elastic within [min, max] and `steps` long,
    checkpointing every `interval`; early stopping then waits `shared["min_steps"]`."""
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
        {"policy": stopping, "minSteps": 1, "minCompletedTrials": 2}
        if stopping != "None"
        else {"policy": "None"}
    )
    if shared:
        doc["spec"]["budget"].update(
            parallelTrials=shared["parallel"], maxReplicas=shared["workers"]
        )
        doc["spec"]["trialTemplate"]["replicas"] = shared["min"]
        # The objective trains at a global batch of 16 whatever the workers; the template
        # says the same, in micro-batches that up to 4 workers can share.
        doc["spec"]["trialTemplate"]["training"].update(
            steps=shared["steps"], globalBatchSize=16, microBatchSize=4
        )
        doc["spec"]["trialTemplate"]["checkpoint"]["intervalSteps"] = shared["interval"]
        doc["spec"]["trialTemplate"]["elastic"] = {
            "minReplicas": shared["min"],
            "maxReplicas": shared["max"],
        }
        if stopping != "None":
            # As in the example (minSteps 20 of 60): no stop in the first third of a trial.
            doc["spec"]["earlyStopping"]["minSteps"] = shared["min_steps"]
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
        self.requested: list[tuple[float, int, int]] = []  # every point asked for, in order

    def __call__(self, params: dict[str, Any]) -> tuple[list[tuple[int, float]], float]:
        key = (float(params["learningRate"]), int(params["warmupSteps"]), int(params["width"]))
        self.requested.append(key)
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


# --------------------------------------------------------------------------------------
# 2. Early stopping and the shared budget, against a Katib-like baseline (wall-clock replay)


def katib_threshold(
    finished: list[dict[str, Any]], start_step: int, min_trials: int
) -> float | None:
    """Katib's medianstop (pkg/earlystopping/v1beta1/medianstop/service.py): for each
    succeeded trial the mean of its first `start_step` reported values; once at least
    `min_trials` succeeded, the rule's value is the mean of those means (Katib computes a
    mean there, despite the name). Katib hands the rule to a trial when it creates it."""
    means = [
        statistics.fmean(v for _, v in t["history"][:start_step])
        for t in finished
        if t["state"] == "Succeeded"
    ]
    return statistics.fmean(means) if len(means) >= min_trials else None


@dataclass(frozen=True)
class Clock:
    """The replay's clock: one consistent time scale for steps and rescales.

    A trial's step is a step of our runtime (`python -m lmworker.train` under the
    rendezvous), as bench/rescale.py and bench/recovery.py measured it for their model at
    world sizes 1, 2, 3 (`runtime_step`, seconds, constant global batch), scaled by the
    point's relative cost: its in-process seconds per step over `reference`, the median
    of the points of part 1. With `alpha`, world sizes above 1 follow the model
    t(w) = t(1) (1 + alpha (w - 1)) / w instead of the measured steps. A rescale and a
    trial's start cost what the same benches measured for the same runtime on the same
    machine: `join` (launch to first step of an added worker, held meanwhile while the
    trial trains on), `pause` (each change of world size stops the trial, all its workers
    held), `start` (a new trial's workers are held this long before its first step)."""

    runtime_step: tuple[float, ...]
    reference: float
    join: float
    pause: float
    start: float
    alpha: float | None = None

    def step(self, t1: float, workers: int) -> float:
        relative = t1 / self.reference
        if self.alpha is None:
            if workers > len(self.runtime_step):
                raise ValueError(
                    f"--runtime-step gives world sizes 1..{len(self.runtime_step)}, "
                    f"a trial has {workers} workers: give a step time for each world size"
                )
            return self.runtime_step[workers - 1] * relative
        return self.runtime_step[0] * relative * (1 + self.alpha * (workers - 1)) / workers


def replay(
    spec: Any,
    objective: Objective,
    trials: int,
    mode: str,
    clock: Clock,
    katib: tuple[int, int],
) -> dict[str, Any]:
    """Replay a search of `trials` trials, `spec.budget.parallelTrials` at a time, on a wall
    clock, from the measured curves. Modes:

    - "katib": fixed workers per trial (maxReplicas / parallelTrials), Katib's medianstop
      with its defaults (start_step, min_trials_required = `katib`);
    - "stopping": the same fixed workers, the operator's early stopping
      (`lmoperator.tuning.search.stop_reason` with the spec's earlyStopping);
    - "elastic": the operator's early stopping and its worker allocation
      (`lmoperator.tuning.allocate.allocate` under maxReplicas, recomputed at every
      checkpoint and trial start/end, as the operator's passes do).

    Time is `clock`'s. Worker-seconds: the integral over the wall clock of every worker
    the search holds (starting, joining, paused or training), from the search's start.
    Returned: per finished trial (clock, worker-seconds so far, value or None)."""
    from lmoperator.api.tuningjob import TrialState
    from lmoperator.tuning.allocate import RunningTrial, allocate
    from lmoperator.tuning.search import Observation, stop_reason, suggest

    budget = spec.budget
    fixed = budget.max_replicas // budget.parallel_trials
    low = spec.trial_template.elastic.min_replicas
    high = spec.trial_template.elastic.max_replicas
    now = 0.0
    worker_seconds = 0.0
    finished: list[dict[str, Any]] = []
    running: list[dict[str, Any]] = []
    started = 0
    timeline: list[tuple[float, float, float | None]] = []  # (clock, worker-s, value)

    def observations() -> list[Observation]:
        rows = [
            Observation(
                t["number"],
                t["params"],
                TrialState(t["state"]),
                t.get("value"),
                tuple(t["history"]),
            )
            for t in [*finished, *running]
        ]
        return sorted(rows, key=lambda o: o.number)

    def rebalance() -> None:
        if mode != "elastic":
            return
        plan = allocate(
            budget.max_replicas,
            [
                RunningTrial(
                    str(t["number"]),
                    t["number"],
                    low,
                    high,
                    t["workers"] + t["joining"],
                    t["history"][-1][1] if t["history"] else None,
                )
                for t in running
            ],
        )
        for a in plan:
            t = next(t for t in running if str(t["number"]) == a.name)
            if t["new"]:
                t["workers"], t["new"] = a.replicas, False  # created with these workers
                continue
            held = t["workers"] + t["joining"]
            if a.replicas > held:
                # The new workers are held while they start and join; the trial trains
                # on at its old size meanwhile.
                if not t["joining"]:
                    t["join_left"] = clock.join
                t["joining"] += a.replicas - held
            elif a.replicas < held:
                cut = held - a.replicas
                dropped = min(cut, t["joining"])
                t["joining"] -= dropped
                if cut > dropped:
                    t["workers"] -= cut - dropped
                    t["pause"] += clock.pause

    def until_event(t: dict[str, Any]) -> float:
        target = t["curve"][len(t["history"])][0]
        to_checkpoint = float(t["pause"] + (target - t["pos"]) * clock.step(t["t1"], t["workers"]))
        return min(to_checkpoint, float(t["join_left"])) if t["joining"] else to_checkpoint

    while started < trials or running:
        while len(running) < budget.parallel_trials and started < trials:
            params = suggest(spec, observations())
            curve, t1 = objective(params)
            threshold = katib_threshold(finished, *katib) if mode == "katib" else None
            running.append(
                {
                    "number": started,
                    "params": params,
                    "state": TrialState.RUNNING.value,
                    "curve": curve,
                    "t1": t1,
                    "pos": 0.0,
                    "history": [],
                    "workers": fixed if mode != "elastic" else low,
                    "new": True,
                    "joining": 0,
                    "join_left": 0.0,
                    # Starting: the trial's workers are held, not training yet.
                    "pause": clock.start,
                    "threshold": threshold,
                }
            )
            started += 1
        rebalance()
        dt = min(until_event(t) for t in running)
        for t in running:
            worker_seconds += (t["workers"] + t["joining"]) * dt
            pause = min(t["pause"], dt)
            t["pause"] -= pause
            t["pos"] += (dt - pause) / clock.step(t["t1"], t["workers"])
            if t["joining"]:
                t["join_left"] -= dt
                if t["join_left"] <= 1e-9:
                    t["workers"] += t["joining"]
                    t["joining"], t["join_left"] = 0, 0.0
                    t["pause"] += clock.pause
        now += dt
        for t in list(running):
            target_step, value = t["curve"][len(t["history"])]
            if t["pos"] < target_step - 1e-9:
                continue
            t["pos"] = float(target_step)
            t["history"].append((target_step, value))
            done = len(t["history"]) == len(t["curve"])
            stop = False
            if not done and mode == "katib":
                stop = (
                    t["threshold"] is not None
                    and len(t["history"]) >= katib[0]
                    and value > t["threshold"]
                )
            elif not done:
                stop = stop_reason(spec, observations(), t["number"]) is not None
            if done or stop:
                t["state"] = TrialState.SUCCEEDED.value if done else TrialState.EARLY_STOPPED.value
                t["value"] = value if done else None
                running.remove(t)
                finished.append(t)
                timeline.append((now, worker_seconds, t["value"]))
    stopped = [t["curve"][-1][1] for t in finished if t["state"] != TrialState.SUCCEEDED.value]
    # What each early-stopped trial would have ended at, had it run to the end.
    return {"timeline": timeline, "stopped_would_have_ended_at": stopped}


def reached(timeline: list[tuple[float, float, float | None]], goal: float) -> tuple[float, float]:
    """(wall clock, worker-seconds) when a trial first finished with an objective <= goal:
    every worker held until that moment counts, whichever trial held it."""
    for at, spent, value in timeline:
        if value is not None and value <= goal + 1e-12:
            return at, spent
    return math.inf, math.inf


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
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=2, help="trials at once (part 2)")
    parser.add_argument("--workers", type=int, default=4, help="workers they share (part 2)")
    parser.add_argument(
        "--trial-max-workers", type=int, default=3, help="a trial's elastic maximum (part 2)"
    )
    parser.add_argument(
        "--runtime-step",
        default="0.146,0.149,0.132",
        help="our runtime's steady seconds per step at world sizes 1,2,3 (constant global "
        "batch): bench/recovery.py's 1; the median of bench/rescale.py's and "
        "bench/recovery.py's runs at 2 and at 3",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.24,
        help="the alternative scaling model t(w) = t(1) (1 + alpha (w - 1)) / w; 0.24 is "
        "2 fp32 workers' 1.62x of one in bench/finetune_throughput.py",
    )
    parser.add_argument(
        "--join-seconds", type=float, default=4.37, help="bench/rescale.py: join, launch to step"
    )
    parser.add_argument(
        "--pause-seconds", type=float, default=0.42, help="bench/rescale.py: rescale downtime"
    )
    parser.add_argument(
        "--start-seconds",
        type=float,
        default=2.98,
        help="bench/rescale.py: a new trial's start to its first step",
    )
    parser.add_argument("--katib-start-step", type=int, default=4)
    parser.add_argument("--katib-min-trials", type=int, default=3)
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep the trained points in this file and reuse them (for iterating; the "
        "documented run trains every point afresh)",
    )
    args = parser.parse_args()
    try:
        runtime_step = tuple(float(x) for x in args.runtime_step.split(","))
    except ValueError:
        parser.error(
            f"--runtime-step {args.runtime_step!r}: give seconds per step, e.g. 0.146,0.149,0.132"
        )
    if len(runtime_step) < max(args.trial_max_workers, args.workers // args.parallel):
        parser.error(
            f"--runtime-step gives {len(runtime_step)} world sizes; a trial may have up to "
            f"{max(args.trial_max_workers, args.workers // args.parallel)} workers"
        )

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        objective = Objective(Path(tmp), args.steps, args.interval)
        if args.cache and args.cache.exists():
            objective.cache = pickle.loads(args.cache.read_bytes())
        curves: dict[str, list[list[float]]] = {}
        for algorithm in ALGORITHMS:
            curves[algorithm] = []
            for seed in range(args.seeds):
                rows = run_search(
                    spec_for(algorithm, seed, args.trials, "None"), objective, args.trials, False
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
        # Early stopping and the shared budget against a Katib-like baseline, replayed on
        # a wall clock from the measured curves (the Bayesian sampler in every contender).
        # The clock: the median point of part 1 steps as fast as our runtime's measured step.
        part1 = sorted(set(objective.requested))
        reference = statistics.median(objective.cache[k][1] for k in part1)
        clock = Clock(
            runtime_step, reference, args.join_seconds, args.pause_seconds, args.start_seconds
        )
        shared = {
            "parallel": args.parallel,
            "workers": args.workers,
            "min": 1,
            "max": args.trial_max_workers,
            "min_steps": args.steps // 3,
            "steps": args.steps,
            "interval": args.interval,
        }
        katib_rule = (args.katib_start_step, args.katib_min_trials)
        free = Clock(runtime_step, reference, 0.0, 0.0, args.start_seconds)
        alpha = Clock(
            runtime_step,
            reference,
            args.join_seconds,
            args.pause_seconds,
            args.start_seconds,
            alpha=args.alpha,
        )
        contenders: dict[str, tuple[str, str, Clock]] = {
            "katib": ("katib", "None", clock),
            "median": ("stopping", "Median", clock),
            "successive_halving": ("stopping", "SuccessiveHalving", clock),
            "median_shared": ("elastic", "Median", clock),
            "successive_halving_shared": ("elastic", "SuccessiveHalving", clock),
            "median_shared_free_rescale": ("elastic", "Median", free),
            "median_shared_alpha_scaling": ("elastic", "Median", alpha),
        }
        replays: dict[str, list[dict[str, Any]]] = {k: [] for k in contenders}
        for seed in range(args.seeds):
            # Interleaved: every contender's replay of seed s before any of seed s + 1.
            for key, (mode, stopping, how) in contenders.items():
                spec = spec_for("Bayesian", seed, args.trials, stopping, shared)
                replays[key].append(replay(spec, objective, args.trials, mode, how, katib_rule))
            print(f"part 2: seed {seed} done ({len(objective.cache)} points)", file=sys.stderr)
        shared_budget: dict[str, Any] = {}
        for key in contenders:
            ratios, wall, lost = [], [], 0
            for seed in range(args.seeds):
                base = replays["katib"][seed]["timeline"]
                goal = min(v for _, _, v in base if v is not None)
                ended = replays[key][seed]["stopped_would_have_ended_at"]
                lost += any(v <= goal + 1e-12 for v in ended)
                base_at, base_spent = reached(base, goal)
                at, spent = reached(replays[key][seed]["timeline"], goal)
                ratios.append(spent / base_spent)
                wall.append(at / base_at)
            finals = [
                min((v for _, _, v in r["timeline"] if v is not None), default=math.inf)
                for r in replays[key]
            ]
            totals = [r["timeline"][-1][1] for r in replays[key]]
            stopped = [sum(v is None for _, _, v in r["timeline"]) for r in replays[key]]
            median_ratio = statistics.median(ratios)
            shared_budget[key] = {
                # None: in most seeds it never reached the baseline's best.
                "worker_seconds_ratio_to_reach_katib_best_median": (
                    round(median_ratio, 3) if math.isfinite(median_ratio) else None
                ),
                "ratios": [round(r, 3) if math.isfinite(r) else None for r in ratios],
                "wall_clock_ratio_to_reach_median": (
                    round(statistics.median(wall), 3)
                    if math.isfinite(statistics.median(wall))
                    else None
                ),
                "reached": sum(math.isfinite(r) for r in ratios),
                "final_best_median": round(statistics.median(finals), 4),
                "worker_seconds_all_trials_median": round(statistics.median(totals), 1),
                "trials_stopped_early_median": statistics.median(stopped),
                # Seeds where a trial that would have matched the baseline's best was
                # stopped early.
                "seeds_with_a_match_stopped": lost,
            }
        trial_seconds = statistics.median(c[1] * args.steps for c in objective.cache.values())
        if args.cache:
            args.cache.write_bytes(pickle.dumps(objective.cache))
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
        # Per seed; trials + 1: not within the budget.
        "bayesian_trials_to_random_final_best": needed,
        "shared_budget": {
            "parallel_trials": args.parallel,
            "workers": args.workers,
            "trial_workers": f"katib/stopping: {args.workers // args.parallel} fixed; "
            f"shared: 1..{args.trial_max_workers}",
            "runtime_step_seconds": list(runtime_step),
            "reference_in_process_step_seconds": round(reference, 4),
            "replayed_trial_seconds_median_1_worker": round(
                statistics.median(clock.step(objective.cache[k][1], 1) * args.steps for k in part1),
                1,
            ),
            "alpha": args.alpha,
            "join_seconds": args.join_seconds,
            "pause_seconds": args.pause_seconds,
            "start_seconds": args.start_seconds,
            "katib_medianstop": {
                "start_step": args.katib_start_step,
                "min_trials_required": args.katib_min_trials,
            },
            **shared_budget,
        },
        "replayed": "from measured per-trial loss curves, not on devcluster",
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
