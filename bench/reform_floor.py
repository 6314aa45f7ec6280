"""The floor under a re-formation, timed alone: one `init_process_group` plus one
broadcast of the training state, as `lmworker.train` hands it over (the structure as one
pickled object, then each tensor), between processes that are already running.

`bench/rescale.py` runs it in the same run as the rescales, so that the re-formation
overhead (downtime minus one normal step) is read against it. Run alone:

    .venv/bin/python bench/reform_floor.py [--world 3] [--rounds 7]

Every process builds the bench's `Trainer` (the tiny model, AdamW with its moments
allocated, as after a first step) before the clock starts. Each round, all ranks meet
on a store; rank 0 then times `init_process_group` (gloo, a fresh prefix of the same
store) and the broadcast from rank 0, until every rank has the state. It prints one
JSON line: the median and range over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from elastic_harness import PY, free_port, make_corpus, worker_config

HERE = Path(__file__).resolve().parent


def _rank_main(rank: int, world: int, port: int, rounds: int, config_file: str) -> None:
    import torch
    import torch.distributed as dist

    from lmworker.config import WorkerConfig
    from lmworker.trainer import Trainer, flatten_state, tensor_slots

    torch.set_num_threads(1)
    cfg = WorkerConfig.from_json(Path(config_file).read_text())
    trainer = Trainer(cfg, torch.device("cpu"))
    for p in trainer.model.parameters():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()  # AdamW's moments exist, as in any state worth handing over
    store = dist.TCPStore(
        "127.0.0.1", port, world, is_master=rank == 0, timeout=timedelta(seconds=60)
    )
    seconds: list[float] = []
    for i in range(rounds):
        store.add(f"meet/{i}", 1)
        while int(store.add(f"meet/{i}", 0)) < world:
            time.sleep(0.001)
        t0 = time.perf_counter()
        pg_store = dist.PrefixStore(f"round/{i}", store)
        dist.init_process_group("gloo", store=pg_store, rank=rank, world_size=world)
        flat: list[torch.Tensor] = []
        skeleton: list[Any] = [None]
        if rank == 0:
            skeleton[0] = flatten_state(trainer.checkpoint_state_for_hand_over(), flat)
        dist.broadcast_object_list(skeleton, src=0)
        if rank != 0:
            flat = [torch.empty(s.shape, dtype=s.dtype) for s in tensor_slots(skeleton[0])]
        for tensor in flat:
            dist.broadcast(tensor, src=0)
        dist.barrier()  # every rank holds the state
        seconds.append(time.perf_counter() - t0)
        dist.destroy_process_group()
    if rank == 0:
        numel = sum(t.numel() * t.element_size() for t in flat)
        print(json.dumps({"seconds": seconds, "state_bytes": numel, "tensors": len(flat)}))


def measure(world: int, rounds: int, data: Path) -> dict[str, Any]:
    """Start `world` processes, let them time `rounds` formations; the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(worker_config(data, None, 1000, steps=1000))
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        common = ["--world", str(world), "--port", str(port), "--rounds", str(rounds)]
        common += ["--config", str(config_file)]
        procs = [
            subprocess.Popen(
                [PY, str(HERE / "reform_floor.py"), "--rank", str(r), *common],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for r in range(world)
        ]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError(f"a floor process failed: {[p.returncode for p in procs]}")
    figures = json.loads(outputs[0].strip().splitlines()[-1])
    seconds = figures["seconds"]
    return {
        "floor_s": round(statistics.median(seconds), 3),
        "floor_min_s": round(min(seconds), 3),
        "floor_max_s": round(max(seconds), 3),
        "floor_rounds": len(seconds),
        "state_bytes": figures["state_bytes"],
        "state_tensors": figures["tensors"],
        "world_size": world,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        _rank_main(args.rank, args.world, args.port, args.rounds, args.config)
        return
    with tempfile.TemporaryDirectory(prefix="bench-floor-data-") as tmp:
        data = Path(tmp) / "corpus.txt"
        make_corpus(data)
        print(json.dumps({"bench": "reform_floor", **measure(args.world, args.rounds, data)}))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
