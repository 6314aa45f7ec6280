"""Rescale downtime: our elastic workers vs plain torchrun elastic, same model and store.

Per runtime and repeat: start 2 nodes; after `--steady` steps at world size 2 launch a
3rd (join); after `--steady` steps at 3, SIGTERM the 3rd (departure: ours, the worker
process, which leaves gracefully; torchrun, the agent and its worker together, as a pod
deletion does). From rank 0's step log, per change:

- downtime: last step completed at the old world size → first step completed at the
  new one (one normal step is included: subtract `step_seconds` for pure overhead);
- event_to_step: the launch / SIGTERM → first step at the new world size;
- steps_lost: steps computed again (torchrun reloads the newest checkpoint).

Both runtimes train the same tiny Llama (2 layers, hidden 128, 4 heads, context 128,
Bytes vocabulary; global batch 24, micro-batch 4, fp32, gloo, one thread per worker),
checkpoint every `--checkpoint-interval` steps, and use one `python -m
lmworker.rendezvous` process as the store (torchrun: c10d backend, `is_host=false`).
torchrun keeps its default rendezvous timeouts; it gets
`TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` (otherwise it cannot scale up) and
`--max-restarts=100` (the default 0 ends the job at the first departure). Runtimes are
interleaved per repeat; figures are medians over repeats.

    .venv/bin/python bench/rescale.py [--repeats 2] [--steady 12] [--checkpoint-interval 5]
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


def at_size(steps: list[Any], size: int, since: float) -> list[Any]:
    return [s for s in steps if s.world_size == size and s.t > since]


def scenario(runtime: str, workdir: Path, data: Path, steady: int, interval: int) -> dict[str, Any]:
    cluster = Cluster(runtime, workdir, data, interval)
    try:
        cluster.start_rendezvous(max_nodes=3)
        t0 = cluster.start_node(0, expected=2, max_nodes=3)
        cluster.start_node(1, expected=2, max_nodes=3)
        steps = cluster.wait_for("first step", lambda s: bool(s), PHASE_TIMEOUT)
        first = steps[0]
        log(f"{runtime}: first step {first.t - t0:.2f}s after launch")
        cluster.wait_for(
            "steady steps at 2", lambda s: len(at_size(s, 2, 0)) >= steady, PHASE_TIMEOUT
        )

        t_join = cluster.start_node(2, expected=3, max_nodes=3)
        log(f"{runtime}: node 2 launched")
        cluster.wait_for(
            "steady steps at 3", lambda s: len(at_size(s, 3, t_join)) >= steady, PHASE_TIMEOUT
        )

        t_leave = cluster.signal_node("node2", signal.SIGTERM)
        log(f"{runtime}: node 2 sent SIGTERM")
        steps = cluster.wait_for(
            "steps at 2 after the departure",
            lambda s: len(at_size(s, 2, t_leave)) >= max(3, steady // 2),
            PHASE_TIMEOUT,
        )
        join = find_change(steps, 2, 3, t_join)
        leave = find_change(steps, 3, 2, t_leave)
        if join is None or leave is None:
            raise RuntimeError(f"{runtime}: no world size change in the step log ({workdir})")
        out = {
            "start_to_first_step_s": round(first.t - t0, 3),
            "join_downtime_s": round(join.downtime, 3),
            "join_event_to_step_s": round(join.first_new.t - t_join, 3),
            "join_steps_lost": join.steps_lost,
            "leave_downtime_s": round(leave.downtime, 3),
            "leave_event_to_step_s": round(leave.first_new.t - t_leave, 3),
            "leave_steps_lost": leave.steps_lost,
            "step_seconds_ws2": median(step_seconds(steps, 2)),
            "step_seconds_ws3": median(step_seconds(steps, 3)),
        }
        log(f"{runtime}: {json.dumps(out)}")
        return out
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, steady_help="steps at each world size")
    args = parser.parse_args()
    started = time.monotonic()
    results = run_repeats(
        "rescale",
        args,
        lambda runtime, workdir, data: scenario(
            runtime, workdir, data, args.steady, args.checkpoint_interval
        ),
    )
    runtimes = list(results)
    figures: dict[str, Any] = {"bench": "rescale"}
    for runtime in runtimes:
        figures[runtime] = medians(results[runtime])
    if "ours" in figures and "torchrun" in figures:
        ours, theirs = figures["ours"], figures["torchrun"]
        figures["ratio_join"] = round(ours["join_downtime_s"] / theirs["join_downtime_s"], 3)
        figures["ratio_leave"] = round(ours["leave_downtime_s"] / theirs["leave_downtime_s"], 3)
        figures["ratio_start"] = round(
            ours["start_to_first_step_s"] / theirs["start_to_first_step_s"], 3
        )
    all_runs = [r for rs in results.values() for r in rs]
    figures["step_seconds"] = median(
        [r["step_seconds_ws2"] for r in all_runs if r["step_seconds_ws2"]]
    )
    figures["repeats"] = args.repeats
    figures["steady_steps"] = args.steady
    figures["checkpoint_interval"] = args.checkpoint_interval
    figures["per_repeat"] = results
    figures["wall_s"] = round(time.monotonic() - started, 1)
    figures["torch"] = torch_version()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
