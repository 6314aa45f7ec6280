"""Load-time compression of a `LlamaModel` for serving, guarded by a perplexity gate.

The server calls one function after loading the (float32) model:

    prepare_for_serving(
        model: LlamaModel,
        tokenizer: Tokenizer,
        model_dir: str | os.PathLike[str] | None,
        settings: CompressionSettings,
        *,
        device: torch.device | str = "cpu",
        facts: MachineFacts | None = None,
    ) -> tuple[LlamaModel, CompressionReport]

It changes `model` in place, in this order: pruning (Magnitude | Structured), then int8
quantization or a cast to the chosen precision, and returns it with a
`CompressionReport`: the precision and why (`lmworker.precision`), perplexity before and
after on held-out text, and `refused` — None, or the message for the LMService's
Compressed=False condition when the increase exceeds `max_perplexity_increase`. A
refused model must not serve. The uncompressed perplexity is cached (see
`lmworker.perplexity.BaselineCache`), so a pod start pays only for the compressed pass.
When nothing is compressed (no pruning, no int8, fp32) nothing is measured. The server
(`lmworker.serve.cli`) builds the settings from its flags, which the operator renders from
the LMService's spec.precision and spec.compression.

int8 (`lmworker.quantization`) is SmoothQuant plus per-token activation scales on
PyTorch's dynamic int8 kernels (FBGEMM/oneDNN): plain `quantize_dynamic` raised
SmolLM2-135M's perplexity by 184 %, ours by ~2 %, and both decode much faster than
fp32 at batch 1, while torchao's int8 configs ran slower than fp32 in eager mode (they
are built for torch.compile); docs/serving.md has the figures. It takes fp32
activations, so int8 computes in fp32: precision auto resolves to fp32 with int8, and an
explicit bf16/fp16 with int8 is an error. int8 runs on CPU only. Calibration (int8's
activation ranges, Structured pruning's channel ranking) uses the held-out text's last
512 tokens, never the ones the perplexity is measured on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lmworker import perplexity as ppl
from lmworker import quantization
from lmworker.model import LlamaModel
from lmworker.precision import PRECISIONS, MachineFacts, PrecisionChoice, choose_precision
from lmworker.precision import probe_machine as probe
from lmworker.pruning import PRUNING_METHODS, check_amount, prune
from lmworker.tokenizer import Tokenizer

log = logging.getLogger(__name__)

QUANTIZATIONS = ("none", "int8")


class CompressionError(ValueError):
    """Settings that cannot be applied together or on this device; the message says why."""


@dataclass(frozen=True)
class CompressionSettings:
    """What to do at load; the LMService's spec.compression, resolved by the server."""

    quantization: str = "none"  # none | int8
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    pruning_method: str | None = None  # Magnitude | Structured
    pruning_amount: float = 0.0
    max_perplexity_increase: float = 0.05
    perplexity_tokens: int = ppl.DEFAULT_TOKEN_BUDGET
    # Where the baseline perplexity goes when the model directory is read-only.
    cache_dir: str | None = None

    def problems(self) -> list[str]:
        found = []
        if self.quantization not in QUANTIZATIONS:
            found.append(f"quantization must be one of {', '.join(QUANTIZATIONS)}")
        if self.precision not in PRECISIONS:
            found.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.pruning_method is not None and self.pruning_method not in PRUNING_METHODS:
            found.append(f"pruning method must be one of {', '.join(PRUNING_METHODS)}")
        try:
            check_amount(self.pruning_amount)
        except ValueError as exc:
            found.append(str(exc))
        if self.max_perplexity_increase < 0:
            found.append("maxPerplexityIncrease must be >= 0")
        if self.perplexity_tokens < 1:
            found.append("the perplexity token budget must be positive")
        return found

    @property
    def prunes(self) -> bool:
        return self.pruning_method is not None and self.pruning_amount > 0


@dataclass(frozen=True)
class CompressionReport:
    precision: str  # fp32 | bf16 | fp16: the dtype the model computes in
    precision_reason: str
    quantization: str  # none | int8
    pruning: str | None  # what pruning did, in words
    perplexity_before: float | None  # uncompressed, fp32
    perplexity_after: float | None
    perplexity_tokens: int  # tokens scored (0 when nothing was measured)
    baseline_cached: bool  # the before figure came from the cache
    refused: str | None  # why the compressed model must not serve; None when it may
    seconds: float  # time spent compressing and measuring

    @property
    def perplexity_increase(self) -> float | None:
        if self.perplexity_before is None or self.perplexity_after is None:
            return None
        return ppl.relative_increase(self.perplexity_before, self.perplexity_after)

    def summary(self) -> str:
        """One line for the log and the Compressed condition's message when accepted."""
        parts = [f"precision {self.precision}", f"quantization {self.quantization}"]
        if self.pruning:
            parts.append(self.pruning)
        if self.perplexity_before is not None and self.perplexity_after is not None:
            increase = self.perplexity_increase or 0.0
            parts.append(
                f"perplexity {self.perplexity_before:.2f} → {self.perplexity_after:.2f} "
                f"({increase * 100:+.1f}%) on {self.perplexity_tokens} held-out tokens"
            )
        return "; ".join(parts)


def choose_serving_precision(settings: CompressionSettings, facts: MachineFacts) -> PrecisionChoice:
    """The precision the model will compute in, given int8's need for fp32 activations."""
    if settings.quantization == "int8":
        if facts.device_type != "cpu":
            raise CompressionError(
                f"int8 quantization runs on CPU only, not on {facts.device_type}: use "
                "quantization none with precision bf16 or fp16 there"
            )
        if settings.precision in ("bf16", "fp16"):
            raise CompressionError(
                f"int8 quantization computes in fp32, so it cannot be combined with precision "
                f"{settings.precision}: set precision auto or fp32, or quantization none"
            )
        return PrecisionChoice(
            name="fp32",
            dtype=torch.float32,
            requested=settings.precision,
            reason="fp32 because int8 dynamic quantization takes fp32 activations",
        )
    return choose_precision(settings.precision, facts)


def cast_to(model: LlamaModel, dtype: torch.dtype) -> LlamaModel:
    """Parameters in `dtype`; the rotary frequencies stay float32, as transformers keeps them."""
    inv_freq = model.get_buffer("inv_freq").float()
    model.to(dtype)
    model.register_buffer("inv_freq", inv_freq, persistent=False)
    return model


def compress(
    model: LlamaModel,
    settings: CompressionSettings,
    precision: PrecisionChoice,
    facts: MachineFacts,
    calibration_ids: torch.Tensor | None,
) -> str:
    """Apply pruning, then int8 or the precision, in place; returns the pruning in words.

    `calibration_ids` ([1, T], text the perplexity is not measured on) calibrate int8
    and rank Structured pruning's channels.
    """
    done = ""
    if settings.prunes:
        assert settings.pruning_method is not None
        done = prune(model, settings.pruning_method, settings.pruning_amount, calibration_ids)
    if settings.quantization == "int8":
        reduce_range = quantization.reduce_range_needed(facts.cpu_flags, facts.architecture)
        quantization.quantize_int8(model, calibration_ids, reduce_range=reduce_range)
    elif precision.dtype != torch.float32:
        cast_to(model, precision.dtype)
    return done


def prepare_for_serving(
    model: LlamaModel,
    tokenizer: Tokenizer,
    model_dir: str | os.PathLike[str] | None,
    settings: CompressionSettings,
    *,
    device: torch.device | str = "cpu",
    facts: MachineFacts | None = None,
) -> tuple[LlamaModel, CompressionReport]:
    """Compress `model` (float32, on `device`) in place and measure what it cost.

    `model_dir` is where the model was loaded from (the baseline perplexity is cached
    there, or under settings.cache_dir); None when it came from elsewhere. `facts` defaults
    to probing this machine. Raises CompressionError for settings that cannot apply.
    """
    problems = settings.problems()
    if model.embed_tokens.weight.dtype != torch.float32:
        problems.append("prepare_for_serving takes the float32 model as loaded")
    if problems:
        raise CompressionError("; ".join(problems))
    started = time.perf_counter()
    facts = facts or probe(device)
    precision = choose_serving_precision(settings, facts)
    compresses = settings.prunes or settings.quantization != "none" or precision.name != "fp32"
    if not compresses:
        return model, _report(settings, precision, "", None, None, 0, False, None, started)

    text_ids = tokenizer.encode(ppl.held_out_text())
    ids = ppl.evaluation_tokens(text_ids, settings.perplexity_tokens)
    calibration = ppl.calibration_tokens(text_ids, len(ids), model.cfg.context_length)
    context = model.cfg.context_length
    cache = ppl.BaselineCache(
        Path(model_dir) if model_dir is not None else None,
        Path(settings.cache_dir) if settings.cache_dir else None,
    )
    key = ppl.baseline_key(ppl.weights_fingerprint(model), ids, context, None)
    before = cache.get(key)
    cached = before is not None
    if before is None:
        before = ppl.perplexity(model, ids, context_length=context)
        written = cache.put(key, before, {"tokens": len(ids) - 1, "context": context})
        log.info("Measured the baseline perplexity %.4g; cached in %s", before, written)

    calibration_ids = torch.tensor([calibration], device=device) if calibration else None
    pruning = compress(model, settings, precision, facts, calibration_ids)
    after = ppl.perplexity(model, ids, context_length=context)
    refused = ppl.perplexity_gate(before, after, settings.max_perplexity_increase)
    report = _report(
        settings, precision, pruning, before, after, len(ids) - 1, cached, refused, started
    )
    log.info("Compression: %s%s", report.summary(), f"; refused: {refused}" if refused else "")
    return model, report


def _report(
    settings: CompressionSettings,
    precision: PrecisionChoice,
    pruning: str,
    before: float | None,
    after: float | None,
    tokens: int,
    cached: bool,
    refused: str | None,
    started: float,
) -> CompressionReport:
    return CompressionReport(
        precision=precision.name,
        precision_reason=precision.reason,
        quantization=settings.quantization,
        pruning=pruning or None,
        perplexity_before=before,
        perplexity_after=after,
        perplexity_tokens=tokens,
        baseline_cached=cached,
        refused=refused,
        seconds=time.perf_counter() - started,
    )
