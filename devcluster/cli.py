"""`elasticlm local up|down` (also `python -m devcluster up|down`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from devcluster import DEFAULT_KUBERNETES_VERSION
from devcluster.paths import default_state_dir
from devcluster.podspec.env import parse_quantity
from devcluster.scheduling import DEFAULT_NODE_CPU, DEFAULT_NODE_MEMORY


def current_file() -> Path:
    """Points at the running devcluster, so `down` finds it without arguments."""
    return default_state_dir() / "current.json"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("up", help="start devcluster in the foreground")
    up.add_argument(
        "--state-dir",
        help="keep the cluster's objects, logs and volumes here so they survive a restart "
        "(default: a new temporary directory, discarded state)",
    )
    up.add_argument("--port", type=int, default=0, help="API server port (default: a free one)")
    up.add_argument(
        "--simulate",
        action="store_true",
        help="mark pods Running and Ready without starting processes (scale tests)",
    )
    up.add_argument(
        "--kubernetes-version",
        default=DEFAULT_KUBERNETES_VERSION,
        help=f"version the API server reports (default: {DEFAULT_KUBERNETES_VERSION})",
    )
    up.add_argument(
        "--verbose", action="store_true", help="also log every API request (access log)"
    )
    up.add_argument(
        "--audit-log",
        metavar="PATH",
        help="write an audit event (JSON line: user, groups, verb, resource, namespace, name, "
        "response code, request URI, timestamps) for every API request to PATH ('-' for "
        "standard output); off by default",
    )
    up.add_argument(
        "--unauthenticated",
        choices=("admin", "anonymous"),
        default="admin",
        help="who requests without credentials are: 'admin' (default; unrestricted, as "
        "every local client of devcluster expects) or 'anonymous' (system:anonymous, "
        "authorized by RBAC as on a real cluster)",
    )
    up.add_argument(
        "--no-tls",
        action="store_true",
        help="do not make a cluster CA or serve HTTPS (pods then reach the API over HTTP)",
    )
    up.add_argument(
        "--no-mount-namespaces",
        action="store_true",
        help="do not give containers private mount namespaces (by default they get one when "
        "devcluster runs as root, with volumes and the service-account token at their "
        "real paths)",
    )
    up.add_argument(
        "--node-cpu",
        type=_quantity,
        default=DEFAULT_NODE_CPU,
        metavar="QUANTITY",
        help="CPU the node offers to pods' requests, e.g. 2 or 1500m; a pod whose requests "
        f"do not fit stays Pending (Unschedulable) until others end (default: {DEFAULT_NODE_CPU})",
    )
    up.add_argument(
        "--node-memory",
        type=_quantity,
        default=DEFAULT_NODE_MEMORY,
        metavar="QUANTITY",
        help=f"memory the node offers to pods' requests, e.g. 8Gi (default: {DEFAULT_NODE_MEMORY})",
    )
    up.set_defaults(func=cmd_up)

    down = commands.add_parser("down", help="stop the running devcluster")
    down.add_argument("--state-dir", help="the --state-dir it was started with")
    down.set_defaults(func=cmd_down)


def _quantity(text: str) -> str:
    """A resource quantity for a `local up` flag, checked (argparse names the flag)."""
    try:
        value = parse_quantity(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Kubernetes quantity (e.g. 4, 1500m, 8Gi)"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero")
    return text


def cmd_up(args: argparse.Namespace) -> int:
    from devcluster.cluster import DevCluster  # the server's imports are heavy: only for `up`

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    persist = args.state_dir is not None
    state_dir = Path(args.state_dir) if persist else Path(tempfile.mkdtemp(prefix="devcluster-"))
    audit_log: str | None = args.audit_log
    if audit_log and audit_log != "-":
        audit_log = str(Path(audit_log).resolve())
    cluster = DevCluster(
        state_dir=state_dir.resolve(),
        port=args.port,
        simulate=args.simulate,
        persist=persist,
        kubernetes_version=args.kubernetes_version,
        audit_log=audit_log,
        anonymous=args.unauthenticated,
        tls=not args.no_tls,
        mount_namespaces=False if args.no_mount_namespaces else None,
        node_cpu=args.node_cpu,
        node_memory=args.node_memory,
    )

    async def run() -> None:
        task = asyncio.create_task(cluster.serve_forever())
        ready = asyncio.create_task(cluster.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if cluster.ready.is_set():
            current_file().parent.mkdir(parents=True, exist_ok=True)
            current_file().write_text(cluster.info_path.read_text())
            print(f"devcluster is up at {cluster.https_url or cluster.url}", flush=True)
            print(f"export KUBECONFIG={cluster.kubeconfig_path}", flush=True)
            print("Stop it with Ctrl-C or `elasticlm local down`.", flush=True)
        ready.cancel()
        await task

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"error: devcluster could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        if current_file().exists():
            info = json.loads(current_file().read_text())
            if info.get("pid") == os.getpid():
                current_file().unlink()
        if not persist:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    info_file = Path(args.state_dir) / "devcluster.json" if args.state_dir else current_file()
    if not info_file.exists():
        print("no running devcluster found", file=sys.stderr)
        return 1
    pid = int(json.loads(info_file.read_text())["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"devcluster (pid {pid}) is not running; removing {info_file}", file=sys.stderr)
        info_file.unlink()
        return 1
    for _ in range(300):  # its pods get their grace periods; wait up to 30 s
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("devcluster stopped")
            return 0
        time.sleep(0.1)
    print(f"devcluster (pid {pid}) did not stop within 30 s", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None, prog: str = "devcluster") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
