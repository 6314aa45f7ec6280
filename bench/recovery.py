"""Failure recovery: SIGKILL one worker mid-run, then restart it; ours vs plain torchrun.

Per runtime and repeat: start `--workers` nodes (default 2); after `--steady` steps at
full size, SIGKILL the last node (ours: the worker process; torchrun: the agent and its
worker together, as a node loss or an OOM kill of the pod would); once training runs
at the reduced size, start it again (as the kubelet / operator would) and wait for the
full size. From rank 0's step log:

- fail_to_step: SIGKILL → first step completed at the reduced world size;
- fail_downtime: last step at full size → first step at the reduced size;
- fail_steps_lost: steps computed again (ours keeps the survivors' state; torchrun
  reloads the newest checkpoint);
- rejoin_to_step / rejoin_downtime / rejoin_steps_lost: the same for the restarted node.

Same model, store and settings as `bench/rescale.py` (torchrun `--nnodes=1:W` with its
default rendezvous timeouts, `--max-restarts=100`,
`TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`). Runtimes are interleaved per repeat; figures
are medians over repeats.

    .venv/bin/python bench/recovery.py [--repeats 2] [--workers 2] [--steady 12]
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path
from typing import Any

from elastic_harness import (
    Cluster,
    Step,
    add_common_arguments,
    find_change,
    log,
    median,
    medians,
    run_repeats,
    step_seconds,
    torch_version,
)

PHASE_TIMEOUT = 150.0


def at_size(steps: list[Step], size: int, since: float) -> list[Step]:
    return [s for s in steps if s.world_size == size and s.t > since]


def scenario(
    runtime: str, workdir: Path, data: Path, workers: int, steady: int, interval: int
) -> dict[str, Any]:
    cluster = Cluster(runtime, workdir, data, interval)
    full, reduced = workers, workers - 1
    victim = workers - 1
    try:
        cluster.start_rendezvous(max_nodes=workers)
        for i in range(workers):
            cluster.start_node(i, expected=workers, max_nodes=workers)
        cluster.wait_for(
            f"steady steps at {full}",
            lambda s: len(at_size(s, full, 0)) >= steady,
            PHASE_TIMEOUT,
        )
        t_kill = cluster.signal_node(f"node{victim}", signal.SIGKILL)
        log(f"{runtime}: node {victim} killed")
        cluster.wait_for(
            f"steps at {reduced} after the kill",
            lambda s: len(at_size(s, reduced, t_kill)) >= 3,
            PHASE_TIMEOUT,
        )
        t_restart = cluster.start_node(victim, expected=workers, max_nodes=workers, suffix="b")
        log(f"{runtime}: node {victim} restarted")
        steps = cluster.wait_for(
            f"steps at {full} after the restart",
            lambda s: len(at_size(s, full, t_restart)) >= 3,
            PHASE_TIMEOUT,
        )
        fail = find_change(steps, full, reduced, t_kill)
        rejoin = find_change(steps, reduced, full, t_restart)
        if fail is None or rejoin is None:
            raise RuntimeError(f"{runtime}: no world size change in the step log ({workdir})")
        out = {
            "fail_to_step_s": round(fail.first_new.t - t_kill, 3),
            "fail_downtime_s": round(fail.downtime, 3),
            "fail_steps_lost": fail.steps_lost,
            "rejoin_to_step_s": round(rejoin.first_new.t - t_restart, 3),
            "rejoin_downtime_s": round(rejoin.downtime, 3),
            "rejoin_steps_lost": rejoin.steps_lost,
            f"step_seconds_ws{full}": median(step_seconds(steps, full)),
            f"step_seconds_ws{reduced}": median(step_seconds(steps, reduced)),
        }
        log(f"{runtime}: {json.dumps(out)}")
        return out
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, choices=[2, 3])
    add_common_arguments(parser, steady_help="steps before the kill")
    args = parser.parse_args()
    started = time.monotonic()
    results = run_repeats(
        "recovery",
        args,
        lambda runtime, workdir, data: scenario(
            runtime, workdir, data, args.workers, args.steady, args.checkpoint_interval
        ),
    )
    runtimes = list(results)
    figures: dict[str, Any] = {"bench": "recovery", "workers": args.workers}
    for runtime in runtimes:
        figures[runtime] = medians(results[runtime])
    if "ours" in figures and "torchrun" in figures:
        ours, theirs = figures["ours"], figures["torchrun"]
        figures["ratio_fail"] = round(ours["fail_to_step_s"] / theirs["fail_to_step_s"], 3)
        figures["ratio_rejoin"] = round(ours["rejoin_to_step_s"] / theirs["rejoin_to_step_s"], 3)
    figures["repeats"] = args.repeats
    figures["steady_steps"] = args.steady
    figures["checkpoint_interval"] = args.checkpoint_interval
    figures["per_repeat"] = results
    figures["wall_s"] = round(time.monotonic() - started, 1)
    figures["torch"] = torch_version()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
