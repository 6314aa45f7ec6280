"""The operator process: registers the handlers, sets kopf up, runs it.

`elasticlm operator` (lmoperator.cli) calls `run()`; `kopf run -m lmoperator.main` works
too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from prometheus_client import start_http_server

import lmoperator.handlers.children
import lmoperator.handlers.service
import lmoperator.handlers.trainingjob
from lmoperator.api.kinds import GROUP
from lmoperator.builders.defaults import NO_DEFAULTS, Defaults
from lmoperator.builders.pods import ROLE_LABEL
from lmoperator.handlers import common
from lmoperator.kube import Kube, load_config
from lmoperator.scrape import Scraper

FINALIZER = f"{GROUP}/finalizer"
DEFAULT_METRICS_PORT = 8080
DEFAULT_METRICS_ADDRESS = "0.0.0.0"
# Passes run in threads (the kubernetes client blocks), and most of a pass is a wait for
# the API server's answer. asyncio's default pool has cpu_count + 4 threads, so on a small
# node a few slow answers queued every other job's pass behind them.
PASS_THREADS = 32


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
    load_config()
    memo.kube = Kube()
    memo.scraper = Scraper()
    port = getattr(memo, "metrics_port", DEFAULT_METRICS_PORT)
    address = getattr(memo, "metrics_address", DEFAULT_METRICS_ADDRESS)
    if port:
        start_http_server(int(port), addr=address)
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
) -> None:
    """Run the operator until interrupted: all namespaces when `namespaces` is empty.

    `liveness` is kopf's health endpoint (`http://0.0.0.0:8081/healthz`): it answers 200
    while kopf's own tasks are alive, for a liveness probe. `pod_defaults` fill what the
    resources' spec.worker leaves out.
    """
    kopf.configure(verbose=verbose)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        standalone=peering is None,
        peering_name=peering,
        liveness_endpoint=liveness,
        memo=kopf.Memo(
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            namespaced=bool(namespaces),
            pod_defaults=pod_defaults,
        ),
    )
