"""The exit hang, looked for: short elastic jobs in a loop, every worker's exit watched.

Each run starts the rendezvous and two workers (`python -m lmworker.train`, as pods run
it) on a 30-step job with checkpoints every 25 steps. Odd runs send one worker SIGTERM
after a few steps (a scaled-away worker's exit path); the others finish together (the
finished workers' path). A worker that has not exited 15 s after its runtime returned
is hung: its exit watchdog prints every thread's stack into its log and says so there;
such runs' logs stay under --keep. A line per run on stderr, one JSON line at the end.

    .venv/bin/python bench/exit_loop.py --runs 50 --keep /tmp/exit-loop
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_elastic_runtime import Cluster

STEPS = 30


def one(tmp: Path, leave: bool) -> dict[str, object]:
    tmp.mkdir(parents=True)
    c = Cluster(tmp, STEPS, "DDP")
    try:
        workers = [c.worker(i, expected=2) for i in range(2)]
        if leave:
            deadline = time.monotonic() + 120
            while len(c.steps()) < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            workers[1].send_signal(signal.SIGTERM)
        codes = []
        for w in workers:
            try:
                codes.append(w.wait(timeout=180))
            except Exception:
                codes.append(None)
        logs = {p.name: p.read_text(errors="replace") for p in tmp.glob("w*.log")}
        return {
            "leave": leave,
            "codes": codes,
            "watchdog": sorted(n for n, t in logs.items() if "exit watchdog" in t),
            "stacks": sorted(n for n, t in logs.items() if "most recent call first" in t),
        }
    finally:
        c.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", type=Path, default=Path("/tmp/exit-loop"))
    args = parser.parse_args()
    shutil.rmtree(args.keep, ignore_errors=True)
    results = []
    t0 = time.monotonic()
    for i in range(args.runs):
        r = one(args.keep / f"run{i:03d}", leave=i % 2 == 1)
        results.append(r)
        print(json.dumps({"run": i, **r}), file=sys.stderr, flush=True)
        if not r["watchdog"] and not r["stacks"]:
            shutil.rmtree(args.keep / f"run{i:03d}")
    hung = [i for i, r in enumerate(results) if r["watchdog"] or r["stacks"]]
    bad = [i for i, r in enumerate(results) if r["codes"] != [0, 0]]
    print(
        json.dumps(
            {
                "runs": len(results),
                "worker_exits": 2 * len(results),
                "hung_runs": hung,
                "nonzero_exit_runs": bad,
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
