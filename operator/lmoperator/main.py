"""The operator process: registers the handlers, sets kopf up, runs it.

`elasticlm operator` (lmoperator.cli) calls `run()`; `kopf run -m lmoperator.main` works
too. With leader election, `run()` starts kopf only once this replica holds the Lease
(lmoperator.leaderelection) and stops the process at once when it loses it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import kopf

import lmoperator.handlers.children
import lmoperator.handlers.common
import lmoperator.handlers.service
import lmoperator.handlers.trainingjob
import lmoperator.handlers.tuningjob
from lmoperator import health
from lmoperator.api.kinds import GROUP
from lmoperator.builders.defaults import NO_DEFAULTS, Defaults
from lmoperator.builders.pods import ROLE_LABEL
from lmoperator.builders.trainingjob import NO_PEERS, NetworkPeers
from lmoperator.handlers import common
from lmoperator.kube import Kube, load_config
from lmoperator.leaderelection import LeaderElectionConfig, LeaderElector
from lmoperator.operator_metrics import LEADER
from lmoperator.scrape import Scraper

FINALIZER = f"{GROUP}/finalizer"
DEFAULT_METRICS_PORT = 8080
DEFAULT_METRICS_ADDRESS = "0.0.0.0"
KOPF_LIVENESS_TIMEOUT_SECONDS = 3.0
# Passes run in threads (the kubernetes client blocks), and most of a pass is a wait for
# the API server's answer. asyncio's default pool has cpu_count + 4 threads, so on a small
# node a few slow answers queued every other job's pass behind them.
PASS_THREADS = 32
#: The exit status after losing the Lease: non-zero, so that the kubelet restarts the
#: pod and it stands by again (client-go's OnStoppedLeading exits the same way).
EXIT_LEADERSHIP_LOST = 1

logger = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Every operator-wide setting, in one place."""
    # kopf puts a finalizer on objects with timers, so that it can stop them before the
    # object goes; children are removed by the garbage collector (owner references).
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Watches end and restart every few minutes (as client-go's reflectors do).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's health endpoint logs every probe through aiohttp's access log: keep it quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The handlers post their own Events; kopf's are for warnings and errors only.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = PASS_THREADS
    # Children are watched with a server-side label selector: only what we made (the
    # handlers of lmoperator.handlers.children filter the same way).
    for child in lmoperator.handlers.children.WATCHED_CHILD_KINDS:
        key = (child.group, child.plural) if child.group else (child.version, child.plural)
        settings.watching.label_selectors[key] = ROLE_LABEL
    # Watching named namespaces needs no cluster-wide permission: kopf then neither lists
    # namespaces nor watches CRDs (it discovers the resources once, at startup, and the
    # CRDs are installed before the operator).
    if getattr(memo, "namespaced", False):
        settings.scanning.disabled = True
    common.set_pod_defaults(getattr(memo, "pod_defaults", NO_DEFAULTS))
    common.set_network_peers(getattr(memo, "network_peers", NO_PEERS))
    load_config()
    memo.kube = Kube()
    memo.scraper = Scraper()
    # `run()` serves the port before kopf starts (a standby serves it too); under
    # `kopf run -m lmoperator.main` this is the place.
    port = getattr(memo, "metrics_port", DEFAULT_METRICS_PORT)
    address = getattr(memo, "metrics_address", DEFAULT_METRICS_ADDRESS)
    if port and not getattr(memo, "metrics_served", False):
        health.serve(int(port), health.always_ok("ok"), health.always_ok("ok"), address)
        logger.info(f"Serving metrics address={address} port={port}")


@kopf.on.startup()
async def pass_threads(**_: Any) -> None:
    """The pool of the daemons' passes (asyncio.to_thread)."""
    pool = ThreadPoolExecutor(max_workers=PASS_THREADS, thread_name_prefix="pass")
    asyncio.get_running_loop().set_default_executor(pool)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    scraper = getattr(memo, "scraper", None)
    if isinstance(scraper, Scraper):
        await scraper.close()


def run(
    namespaces: Collection[str] = (),
    metrics_port: int = DEFAULT_METRICS_PORT,
    peering: str | None = None,
    verbose: bool = False,
    liveness: str | None = None,
    pod_defaults: Defaults = NO_DEFAULTS,
    metrics_address: str = DEFAULT_METRICS_ADDRESS,
    leader_election: LeaderElectionConfig | None = None,
    network_peers: NetworkPeers = NO_PEERS,
) -> None:
    """Run the operator until interrupted: all namespaces when `namespaces` is empty.

    `liveness` is kopf's health endpoint (`http://0.0.0.0:8081/healthz`): it answers 200
    while kopf's own tasks are alive, and the metrics port's `/healthz` asks it. With
    `leader_election`, only the replica that holds the Lease runs the handlers.
    `pod_defaults` fill what the resources' spec.worker leaves out; `network_peers`
    may reach training jobs' metrics ports through their NetworkPolicies.
    """
    kopf.configure(verbose=verbose)
    memo = kopf.Memo(
        metrics_port=metrics_port,
        metrics_address=metrics_address,
        metrics_served=bool(metrics_port),
        namespaced=bool(namespaces),
        pod_defaults=pod_defaults,
        network_peers=network_peers,
    )
    kopf_alive = kopf_liveness(liveness)
    if leader_election is not None:
        _run_elected(namespaces, metrics_port, metrics_address, leader_election, memo, liveness)
        return
    if metrics_port:
        health.serve(metrics_port, kopf_alive, health.always_ok("ok"), metrics_address)
        logger.info(f"Serving metrics address={metrics_address} port={metrics_port}")
    LEADER.set(1)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        standalone=peering is None,
        peering_name=peering,
        liveness_endpoint=liveness,
        memo=memo,
    )


def kopf_liveness(url: str | None) -> health.Check:
    """The metrics port's liveness check: kopf's own endpoint (`--liveness`), asked at
    each probe, fails when kopf's tasks have died; without it, the process answering."""
    if url is None:
        return health.always_ok("ok")

    def check() -> tuple[bool, str]:
        try:
            with urllib.request.urlopen(url, timeout=KOPF_LIVENESS_TIMEOUT_SECONDS):
                return True, "ok"
        except urllib.error.HTTPError as exc:
            return False, f"kopf's liveness endpoint {url} answered {exc.code}"
        except OSError as exc:
            return False, f"kopf's liveness endpoint {url} did not answer: {exc}"

    return check


def _run_elected(
    namespaces: Collection[str],
    metrics_port: int,
    metrics_address: str,
    config: LeaderElectionConfig,
    memo: kopf.Memo,
    liveness: str | None,
) -> None:
    """Stand by until this replica holds the Lease, then run kopf while renewing it.

    - SIGTERM or SIGINT while standing by: exit at once (there is nothing to release).
    - SIGTERM while leading: kopf stops its handlers, the passes still running in
      threads finish, and only then is the Lease released, so two replicas never act at
      once and a standby takes over on its next try (within one retry period).
    - Renewal failed for the renew deadline (or another replica holds the Lease): the
      process ends at once with EXIT_LEADERSHIP_LOST, passes in flight included. A pass
      cut short leaves nothing that the next leader cannot converge from: passes are
      level-based and every write is safe to repeat.
    """
    load_config()
    elector = LeaderElector(Kube(), config)
    kopf_alive = kopf_liveness(liveness)

    def alive() -> tuple[bool, str]:
        ok, message = elector.health()
        if not ok or not elector.leading:
            return ok, message
        return kopf_alive()  # the leader runs kopf: its tasks must be alive too

    if metrics_port:
        health.serve(metrics_port, alive, elector.ready, metrics_address)
        logger.info(f"Serving metrics address={metrics_address} port={metrics_port}")
    stop = threading.Event()
    loop_stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Standing by, and again once kopf is up (replacing kopf's own handlers).
        logger.info(f"Signal {signal.Signals(signum).name} received; stopping")
        request_stop()

    def request_stop() -> None:
        stop.set()
        lmoperator.handlers.common.OPERATOR_STOPPING.set()
        for loop, flag in loop_stop:
            loop.call_soon_threadsafe(flag.set)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not elector.acquire(stop):
        logger.info("Stopped while standing by")
        return

    def renew() -> None:
        if elector.keep_leading(stop):
            return
        _stop_acting_at_once(f"Lost the lease {elector.where}: {elector.why_lost()}")

    renewer = threading.Thread(target=renew, name="lease-renewer", daemon=True)
    renewer.start()
    settings = kopf.OperatorSettings()

    async def operate() -> None:
        loop = asyncio.get_running_loop()
        flag, ready = asyncio.Event(), asyncio.Event()
        loop_stop.append((loop, flag))
        if stop.is_set():
            return

        async def stop_by_flag() -> None:
            # kopf installs its own SIGTERM handler as it starts; one left pending would
            # keep it waiting 5 s for a task on its way out. Stopping by its stop flag
            # ends it as soon as the handlers have stopped.
            await ready.wait()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, on_signal, signum, None)

        watcher = asyncio.create_task(stop_by_flag())
        try:
            await kopf.operator(
                clusterwide=not namespaces,
                namespaces=list(namespaces),
                standalone=True,
                settings=settings,
                stop_flag=flag,
                ready_flag=ready,
                liveness_endpoint=liveness,
                memo=memo,
            )
        except Exception as exc:
            if not flag.is_set():
                raise
            # kopf re-raises what a handler cut short on the way out raised: the stop
            # was asked for, so that is no failure of this replica.
            logger.warning(f"The handlers stopped with an error: {exc!r}")
        finally:
            watcher.cancel()

    try:
        # asyncio.run waits for the default executor (the passes' threads) on its way out.
        asyncio.run(operate())
    except asyncio.CancelledError:
        pass
    finally:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        settings.execution.executor.shutdown(wait=True)  # kopf's own handler threads
        stop.set()
        renewer.join()
        elector.release()


def _stop_acting_at_once(reason: str) -> None:
    """End the process now: no handler may act after the renew deadline."""
    LEADER.set(0)
    logger.error(f"{reason}; stopping at once so that another replica can take over")
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_LEADERSHIP_LOST)
