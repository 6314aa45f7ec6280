"""Rescale downtime: our elastic workers vs plain torchrun elastic, same model and store.

Per runtime and repeat: start 2 nodes; after `--steady` steps at world size 2 launch a
3rd (join); after `--steady` steps at 3, SIGTERM the 3rd (departure: ours, the worker
process, which leaves gracefully; torchrun, the agent and its worker together, as a pod
deletion does). From rank 0's step log, per change:

- downtime: last step completed at the old world size → first step completed at the
  new one (one normal step is included: subtract `step_seconds` for pure overhead);
- event_to_step: the launch / SIGTERM → first step at the new world size;
- steps_lost: steps computed again (torchrun reloads the newest checkpoint);
- join_overhead_s: the join's downtime minus one normal step at the new size, read
  against its floor (`bench/reform_floor.py`, timed alone in the same run: one
  `init_process_group` plus one broadcast of the state between running processes).

A third runtime, `spare`, is ours with a warm spare (`spec.elastic.warmSpares: 1`): the
3rd node starts with the first two, as a spare (loaded and registered, outside the
world), and the join is the operator's promotion order (`lmoperator.scrape.promote_spare`,
the job's secret included), so join_event_to_step_s is request -> first step at the new
size. Its departure is the same as ours.

Both runtimes train the same tiny Llama (2 layers, hidden 128, 4 heads, context 128,
Bytes vocabulary; global batch 24, micro-batch 4, fp32, gloo, one thread per worker),
checkpoint every `--checkpoint-interval` steps, and use one `python -m
lmworker.rendezvous` process as the store (torchrun: c10d backend, `is_host=false`).
torchrun keeps its default rendezvous timeouts; it gets
`TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1` (otherwise it cannot scale up) and
`--max-restarts=100` (the default 0 ends the job at the first departure). Runtimes are
interleaved per repeat; figures are medians over repeats.

    .venv/bin/python bench/rescale.py [--repeats 2] [--steady 12] [--checkpoint-interval 5]
        [--runtimes ours,spare,torchrun]
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import reform_floor
from elastic_harness import (
    Cluster,
    add_common_arguments,
    find_change,
    log,
    make_corpus,
    median,
    medians,
    run_repeats,
    step_seconds,
    torch_version,
)

PHASE_TIMEOUT = 150.0
RUNTIMES = "ours,spare,torchrun"


def standing_by(cluster: Cluster, index: int) -> bool:
    """The node's /ready says it is a spare standing by."""
    try:
        url = f"http://{cluster.address(index)}:9400/ready"
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.read() == b"standing by\n")
    except (urllib.error.URLError, OSError):
        return False


def promote(cluster: Cluster, index: int, expected: int) -> float:
    """The operator's order to the spare at node `index`; the time it was sent."""
    from lmoperator.scrape import promote_spare

    assert cluster.secret_file is not None
    token = cluster.secret_file.read_bytes().strip()
    t = time.time()
    problem = promote_spare(cluster.address(index), token, index, expected)
    if problem is not None:
        raise RuntimeError(f"the spare refused its promotion: {problem}")
    return t


def at_size(steps: list[Any], size: int, since: float) -> list[Any]:
    return [s for s in steps if s.world_size == size and s.t > since]


def scenario(runtime: str, workdir: Path, data: Path, steady: int, interval: int) -> dict[str, Any]:
    cluster = Cluster(runtime, workdir, data, interval)
    try:
        cluster.start_rendezvous(max_nodes=3)
        t0 = cluster.start_node(0, expected=2, max_nodes=3)
        cluster.start_node(1, expected=2, max_nodes=3)
        if runtime == "spare":
            cluster.start_node(2, expected=2, max_nodes=3, spare=True)
        steps = cluster.wait_for("first step", lambda s: bool(s), PHASE_TIMEOUT)
        first = steps[0]
        log(f"{runtime}: first step {first.t - t0:.2f}s after launch")
        cluster.wait_for(
            "steady steps at 2",
            lambda s: (
                len(at_size(s, 2, 0)) >= steady and (runtime != "spare" or standing_by(cluster, 2))
            ),
            PHASE_TIMEOUT,
        )

        if runtime == "spare":
            t_join = promote(cluster, 2, expected=3)
            log(f"{runtime}: node 2 promoted")
        else:
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
        normal = out["step_seconds_ws3"]
        out["join_overhead_s"] = round(join.downtime - normal, 3) if normal else None
        log(f"{runtime}: {json.dumps(out)}")
        return out
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, steady_help="steps at each world size")
    parser.set_defaults(runtimes=RUNTIMES)
    parser.add_argument(
        "--floor-rounds", type=int, default=7, help="formations timed alone for the floor"
    )
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
    # The floor, timed alone in the same run (its own processes, the same corpus and job).
    with tempfile.TemporaryDirectory(prefix="bench-rescale-floor-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        make_corpus(corpus)
        floor = reform_floor.measure(3, args.floor_rounds, corpus)
    figures["floor"] = floor
    for runtime in ("ours", "spare"):
        overhead = figures.get(runtime, {}).get("join_overhead_s")
        if overhead is not None and floor["floor_s"] > 0:
            figures[f"{runtime}_join_overhead_over_floor"] = round(overhead / floor["floor_s"], 2)
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
