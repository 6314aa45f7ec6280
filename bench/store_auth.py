"""What the rendezvous store's authentication costs per store operation.

The same TCPStore server (on loopback) is reached two ways in the same run:

- direct: a TCPStore client connected to the server itself, as before authentication;
- authenticated: through `lmworker.storeauth` as a worker reaches it in a pod: the
  client talks to its local forwarder process, which relays to the AuthProxy, which
  relays to the store (two extra hops, each a Python thread relaying bytes);
- in_process: the same with the forwarder as threads of the client's own process (the
  alternative the worker does not use: see `--busy`).

Each operation (`get` of a small key, `add`, `set`, `check`: what the heartbeat thread
and the rounds use) is timed one at a time, `--ops` times per repeat, the two paths
interleaved over `--repeats`; the figures are medians and 5th/95th percentiles of the
per-operation latency, plus the one-off cost of a new connection (handshake included).
`--busy` adds a Python thread that holds the GIL in the client process, as a training
step's Python code does, to show the in-process relay threads' wait for the GIL.

    .venv/bin/python bench/store_auth.py [--ops 2000] [--repeats 5] [--busy]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))

from torch.distributed import TCPStore

from lmworker import storeauth

SECRET = storeauth.new_secret().encode()


def server() -> tuple[TCPStore, int]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    store = TCPStore(
        "127.0.0.1",
        port,
        is_master=True,
        wait_for_workers=False,
        timeout=timedelta(seconds=30),
        use_libuv=True,
        master_listen_fd=listener.detach(),
    )
    return store, port


def client(host: str, port: int) -> TCPStore:
    return TCPStore(host, port, is_master=False, timeout=timedelta(seconds=30), use_libuv=True)


def operations(store: TCPStore) -> dict[str, Callable[[], object]]:
    store.set("epoch", "0123456789abcdef0123456789abcdef")
    return {
        "get": lambda: store.get("epoch"),
        "add": lambda: store.add("hb/1", 1),
        "set": lambda: store.set("ack/1/1", "1"),
        "check": lambda: store.check(["checkin"]),
    }


def time_ops(ops: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, op in ops.items():
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            op()
            samples.append(time.perf_counter() - t0)
        out[name] = samples
    return out


def summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=20)
    return {
        "median_us": round(1e6 * statistics.median(samples), 1),
        "p5_us": round(1e6 * q[0], 1),
        "p95_us": round(1e6 * q[-1], 1),
    }


def busy_python(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--busy", action="store_true", help="a GIL-holding thread runs")
    args = parser.parse_args()

    _master, port = server()
    proxy_listener = socket.create_server(("127.0.0.1", 0))
    proxy = storeauth.AuthProxy(proxy_listener, ("127.0.0.1", port), SECRET).start()
    secret_file = Path(tempfile.mkdtemp()) / "token"
    secret_file.write_bytes(SECRET)
    forwarder = storeauth.ForwarderProcess(proxy.address, SECRET, str(secret_file))
    in_process = storeauth.Forwarder(proxy.address, SECRET)
    paths = {
        "direct": operations(client("127.0.0.1", port)),
        "authenticated": operations(client(*forwarder.address)),
        "in_process": operations(client(*in_process.address)),
    }
    stop = threading.Event()
    if args.busy:
        threading.Thread(target=busy_python, args=(stop,), daemon=True).start()
    samples: dict[str, dict[str, list[float]]] = {p: {} for p in paths}
    for ops in paths.values():
        time_ops(ops, 200)  # warm-up
    for r in range(args.repeats):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for path in order:
            for name, xs in time_ops(paths[path], args.ops).items():
                samples[path].setdefault(name, []).extend(xs)

    connects: dict[str, list[float]] = {"direct": [], "authenticated": []}
    for _ in range(20):
        t0 = time.perf_counter()
        client("127.0.0.1", port).get("epoch")
        connects["direct"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client(*forwarder.address).get("epoch")
        connects["authenticated"].append(time.perf_counter() - t0)
    stop.set()

    result: dict[str, object] = {"bench": "store_auth", "busy_gil": args.busy, "ops": {}}
    ops_out: dict[str, object] = {}
    for name in samples["direct"]:
        d = summary(samples["direct"][name])
        a = summary(samples["authenticated"][name])
        t = summary(samples["in_process"][name])
        ops_out[name] = {
            "direct": d,
            "authenticated": a,
            "in_process": t,
            "added_us": round(a["median_us"] - d["median_us"], 1),
        }
    result["ops"] = ops_out
    result["connect_ms"] = {p: round(1e3 * statistics.median(xs), 2) for p, xs in connects.items()}
    result["samples_per_op"] = args.ops * args.repeats
    print(json.dumps(result))
    proxy.close()
    forwarder.close()
    in_process.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
