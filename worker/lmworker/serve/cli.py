"""`python -m lmworker.serve`: flags, start-up, SIGTERM drain and exit codes.

Start-up: the HTTP server listens at once (live, not ready), the model loads in a
thread, the engine starts, and /readyz turns 200. On SIGTERM (or SIGINT): /readyz
turns 503 at once, new /v1 requests get 503, requests in flight run to their end
for up to --drain-seconds, then the engine stops (what is left ends with an error
event) and the process exits 0.

Exit codes: 0 after a drain; 3 (lmworker.config.EXIT_PERMANENT) when the model, the
token file or a flag cannot work, with a termination message saying why (written
where ELASTICLM_TERMINATION_LOG points, as lmworker.train does); 1 for anything else
(e.g. the port is taken), which a restart may cure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import prometheus_client
import torch
from aiohttp import web

from lmworker.compression import (
    QUANTIZATIONS,
    CompressionError,
    CompressionReport,
    CompressionSettings,
    prepare_for_serving,
)
from lmworker.config import EXIT_PERMANENT, TERMINATION_LOG_ENV, THREADS_ENV
from lmworker.precision import PRECISIONS, PrecisionError
from lmworker.pruning import PRUNING_METHODS
from lmworker.serve.api import Api, ApiSettings
from lmworker.serve.app import ServerState, create_app
from lmworker.serve.auth import BearerAuth, TokenFileError
from lmworker.serve.chat import ChatTemplateError
from lmworker.serve.engine import Engine, EngineConfig
from lmworker.serve.loading import (
    ModelLoadError,
    ServedModel,
    TextEncoder,
    load_checkpoint,
    load_model_dir,
)
from lmworker.serve.metrics import ServeMetrics

log = logging.getLogger("lmworker.serve")

DEFAULT_PORT = 8000
# An idle keep-alive connection, or one that never completes its request headers
# (slowloris), is closed after this long.
KEEPALIVE_SECONDS = 30.0
# What is left of the handlers after the drain gets this long to answer.
SHUTDOWN_SECONDS = 3.0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lmworker.serve",
        description="An OpenAI-compatible server with continuous batching (docs/serving.md).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="a Hugging Face Llama directory")
    source.add_argument("--checkpoint", help="an LMTrainingJob's checkpoint directory")
    p.add_argument("--step", type=int, help="with --checkpoint: this step, not the newest")
    p.add_argument(
        "--tokenizer",
        help="with --checkpoint: the tokenizer directory, when the job's is not beside it",
    )
    p.add_argument("--served-model-name", help="the `model` clients name (default: dir name)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=8,
        help="sequences decoded together (KV-cache slots)",
    )
    p.add_argument(
        "--max-batch-delay-ms",
        type=_non_negative_float,
        default=10.0,
        help="how long an idle server holds a request for others to batch with",
    )
    p.add_argument(
        "--max-queue",
        type=_positive_int,
        default=64,
        help="requests that may wait for a slot; beyond, 429",
    )
    p.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=256,
        help="the most tokens one request may generate",
    )
    p.add_argument(
        "--max-model-len",
        type=_positive_int,
        help="positions per sequence (default: the model's context length)",
    )
    p.add_argument(
        "--max-prefill-tokens",
        type=_positive_int,
        default=2048,
        help="prompt tokens admitted per forward pass (one prompt always is)",
    )
    p.add_argument(
        "--precision",
        "--dtype",
        dest="precision",
        choices=PRECISIONS,
        default="auto",
        help="dtype of the computation: auto is bf16 where the CPU or GPU runs it natively, "
        "else fp32 (int8 computes in fp32)",
    )
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="none")
    p.add_argument("--pruning-method", choices=PRUNING_METHODS)
    p.add_argument(
        "--pruning-amount",
        type=_non_negative_float,
        default=0.0,
        help="fraction of each linear layer's weights (Magnitude) or MLP channels to remove",
    )
    p.add_argument(
        "--max-perplexity-increase",
        type=_non_negative_float,
        default=0.05,
        help="largest relative held-out perplexity increase the compressed model may show; "
        "beyond it the server stays unready and says why",
    )
    p.add_argument(
        "--perplexity-cache-dir",
        help="where the uncompressed perplexity is cached when the model's directory is read-only",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        help=f"torch threads (default: ${THREADS_ENV}, else torch's choice)",
    )
    p.add_argument("--auth-token-file", help="clients must send this file's token as bearer")
    p.add_argument(
        "--drain-seconds",
        type=_non_negative_float,
        default=20.0,
        help="after SIGTERM, how long requests in flight may take to finish",
    )
    p.add_argument("--max-request-bytes", type=_positive_int, default=1 << 20)
    p.add_argument(
        "--read-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds a request body may take to arrive",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--log-level", default="INFO")
    return p


def load(args: argparse.Namespace) -> tuple[ServedModel, CompressionReport]:
    """The model as it will serve: loaded in fp32, then pruned, quantized or cast and
    measured (lmworker.compression). A report with `refused` set must not serve."""
    if args.model_dir:
        if args.step is not None or args.tokenizer:
            raise ModelLoadError("--step and --tokenizer go with --checkpoint, not --model-dir")
        served = load_model_dir(args.model_dir, "fp32")
    else:
        served = load_checkpoint(args.checkpoint, args.step, "fp32", args.tokenizer)
    settings = CompressionSettings(
        quantization=args.quantization,
        precision=args.precision,
        pruning_method=args.pruning_method,
        pruning_amount=args.pruning_amount,
        max_perplexity_increase=args.max_perplexity_increase,
        cache_dir=args.perplexity_cache_dir,
    )
    model, report = prepare_for_serving(
        served.model, TextEncoder(served), args.model_dir or args.checkpoint, settings
    )
    model.eval().requires_grad_(False)
    return dataclasses.replace(served, model=model, dtype=report.precision), report


def model_info(report: CompressionReport) -> dict[str, Any]:
    """What /readyz says is served (the LMService's status.model)."""
    info: dict[str, Any] = {"precision": f"{report.precision}: {report.precision_reason}"}
    if report.perplexity_before is not None:
        info["perplexityBefore"] = round(report.perplexity_before, 4)
    if report.perplexity_after is not None:
        info["perplexityAfter"] = round(report.perplexity_after, 4)
    info["summary"] = report.summary()
    return info


def served_model_name(args: argparse.Namespace) -> str:
    if args.served_model_name:
        return str(args.served_model_name)
    return Path(args.model_dir or args.checkpoint).resolve().name


def write_termination_message(info: dict[str, Any]) -> None:
    """Kubernetes shows it in the pod's status (the same convention as lmworker.train)."""
    path = os.environ.get(TERMINATION_LOG_ENV)
    if not path:
        return
    try:
        Path(path).write_text(json.dumps(info)[:4000])
    except OSError as exc:
        log.warning("Could not write the termination message path=%s error=%s", path, exc)


Loaded = tuple[ServedModel, CompressionReport]


async def _load_in_thread(args: argparse.Namespace) -> Loaded:
    """Load off the event loop, in a daemon thread a SIGTERM need not wait for."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Loaded] = loop.create_future()

    def work() -> None:
        try:
            result = load(args)
        except BaseException as exc:  # handed to the loop, raised there
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=work, name="load-model", daemon=True).start()
    return await future


def _settle(
    future: asyncio.Future[Loaded], result: Loaded | None, exc: BaseException | None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


async def serve(args: argparse.Namespace, auth: BearerAuth | None) -> None:
    metrics = ServeMetrics(kv_slots=args.max_batch_size)
    state = ServerState()
    app = create_app(state, metrics, auth, args.max_request_bytes)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a client that leaves cancels its handler: slot freed
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
        keepalive_timeout=KEEPALIVE_SECONDS,
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    log.info("Server listening host=%s port=%d", args.host, args.port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine: Engine | None = None
    try:
        loading = asyncio.ensure_future(_load_in_thread(args))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            log.info("Stopped while loading the model")
            loading.cancel()
            return
        served, report = loading.result()
        state.model_info = model_info(report)
        if report.refused is not None:
            # Alive but never ready: the Deployment keeps the old pods serving, and the
            # operator shows this message in the LMService's conditions.
            state.refused = report.refused
            log.error("Not serving: %s", report.refused)
            await stopping
            return
        stopping.cancel()
        engine = Engine(
            served.model,
            EngineConfig(
                max_batch_size=args.max_batch_size,
                max_queue=args.max_queue,
                max_batch_delay=args.max_batch_delay_ms / 1000.0,
                max_prefill_tokens=args.max_prefill_tokens,
                max_length=args.max_model_len,
            ),
            stop_token_ids=served.stop_token_ids,
            observer=metrics,
        )
        settings = ApiSettings(
            served_model_name=served_model_name(args),
            max_new_tokens=args.max_new_tokens,
            max_request_bytes=args.max_request_bytes,
            read_timeout=args.read_timeout,
        )
        api = Api(engine, served, settings, metrics)  # compiles the chat template
        engine.start()
        state.engine_alive = engine.alive
        state.api = api
        metrics.ready.set(1)
        log.info(
            "Model loaded source=%s name=%s dtype=%s context=%d chat_template=%s max_batch_size=%d",
            served.source,
            settings.served_model_name,
            served.dtype,
            engine.max_length,
            "default" if api.template.is_default else "model's own",
            args.max_batch_size,
        )
        await stop.wait()
        await drain(state, metrics, args.drain_seconds)
    finally:
        if engine is not None:
            engine.stop()
        await runner.cleanup()


async def drain(state: ServerState, metrics: ServeMetrics, seconds: float) -> None:
    state.draining = True
    metrics.ready.set(0)
    log.info("Draining in_flight=%d drain_seconds=%g", state.in_flight, seconds)
    try:
        await asyncio.wait_for(state.idle.wait(), timeout=seconds)
        log.info("Drained")
    except TimeoutError:
        log.warning(
            "Drain timed out, stopping requests still in flight in_flight=%d", state.in_flight
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # Scrapers want the samples; `*_created` doubles the series for nothing.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    threads = args.threads or int(os.environ.get(THREADS_ENV) or 0)
    if threads:
        torch.set_num_threads(threads)
    try:
        if args.step is not None and not args.checkpoint:
            raise ModelLoadError("--step goes with --checkpoint")
        auth = BearerAuth(args.auth_token_file) if args.auth_token_file else None
        asyncio.run(serve(args, auth))
    except (
        ModelLoadError,
        TokenFileError,
        ChatTemplateError,
        CompressionError,
        PrecisionError,
    ) as exc:
        log.error("Cannot serve: %s", exc)
        write_termination_message({"permanent": True, "error": str(exc)})
        return EXIT_PERMANENT
    except OSError as exc:
        log.error("Server failed: %s", exc)
        write_termination_message({"permanent": False, "error": str(exc)})
        return 1
    log.info("Server stopped")
    return 0
