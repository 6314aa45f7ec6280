"""Perplexity on held-out text, the gate that compares two figures, and the baseline cache.

- `held_out_text()`: real English prose that ships with every Python install: the prose
  paragraphs of the Python documentation topics in the standard library's
  `pydoc_data.topics` (what `help("assignment")` shows), with the grammar productions,
  code examples (indented blocks) and headings left out. It needs no download and no
  file of ours, so every pod has it.
- `perplexity(model, ids)`: exp of the mean next-token loss over `ids`, scored in sliding
  windows of the model's context (each window starts `stride` tokens after the last and
  scores only the tokens no earlier window scored, so every token but the first is
  scored once, with up to a window of context).
- `perplexity_gate(before, after, max_increase)`: None when the relative increase is
  within the budget, else the message a Kubernetes condition shows.
- `BaselineCache`: the uncompressed figure, computed once per model and kept in a small
  JSON file beside the weights (or in a cache directory when the model's is read-only),
  keyed by a hash of the weights, the tokens scored and the window.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmworker.files import write_atomically
from lmworker.model import LlamaModel

log = logging.getLogger(__name__)

# Enough tokens for a stable figure (SmolLM2's perplexity moves < 1 % between 2k and 4k
# tokens of this text) while one pass stays a few seconds on two CPU cores.
DEFAULT_TOKEN_BUDGET = 2048
# Tokens of one calibration pass (int8's activation ranges), from the text's other end.
CALIBRATION_TOKENS = 512
CACHE_FILE = ".elasticlm-perplexity.json"
CACHE_DIR_ENV = "ELASTICLM_CACHE_DIR"
# Bumped when the way the figure is computed changes, so old entries stop matching.
_METHOD_VERSION = 1
_HEADING_UNDERLINE = re.compile(r"^([*=\-~^\"'`#+])\1{2,}$")


def held_out_text() -> str:
    """Prose paragraphs of the Python documentation shipped in `pydoc_data.topics`."""
    from pydoc_data.topics import topics

    return "\n\n".join(prose_paragraphs(topics[name] for name in sorted(topics)))


def prose_paragraphs(documents: Iterable[str]) -> Iterator[str]:
    """Unindented paragraphs that are not headings, each joined onto one line."""
    for document in documents:
        for paragraph in re.split(r"\n\s*\n", document):
            lines = paragraph.splitlines()
            if not lines or lines[0].startswith((" ", "\t")):
                continue  # code, grammar productions and quoted examples are indented
            if any(_HEADING_UNDERLINE.match(line.strip()) for line in lines):
                continue
            text = " ".join(line.strip() for line in lines).strip()
            if len(text.split()) >= 8:  # a sentence, not a label or a lone reference
                yield text


def evaluation_tokens(encode_ids: Sequence[int], budget: int) -> list[int]:
    """The first `budget` + 1 ids: `budget` tokens are scored, each from the ones before."""
    if budget < 1:
        raise ValueError(f"the perplexity token budget must be positive, got {budget}")
    ids = list(encode_ids[: budget + 1])
    if len(ids) < 2:
        raise ValueError("the held-out text encodes to fewer than 2 tokens")
    return ids


def calibration_tokens(ids: Sequence[int], evaluated: int, context_length: int) -> list[int]:
    """Up to CALIBRATION_TOKENS ids from the end of `ids`, none of the first `evaluated`.

    What calibrates a compression must not be what judges it.
    """
    count = min(CALIBRATION_TOKENS, context_length, max(0, len(ids) - evaluated))
    return list(ids[len(ids) - count :]) if count else []


def windows(length: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(start, end, first_scored) for each window over positions 0..length-1.

    Targets are positions 1..length-1. A window [start, end) predicts targets start+1..end-1;
    only those from `first_scored` on are new, so each target is scored exactly once.
    """
    if window < 2 or not 0 < stride <= window - 1:
        raise ValueError(f"need window >= 2 and 0 < stride < window, got {window}, {stride}")
    first_unscored = 1  # position 0 has nothing before it to be predicted from
    for start in range(0, length, stride):
        end = min(start + window, length)
        yield start, end, first_unscored
        first_unscored = end
        if end == length:
            return


@torch.inference_mode()
def perplexity(
    model: nn.Module,
    ids: Sequence[int],
    *,
    context_length: int,
    stride: int | None = None,
) -> float:
    """exp(mean next-token negative log-likelihood) of `ids` under `model`.

    Windows hold `context_length` tokens (fewer when `ids` is shorter) and advance by
    `stride` (default: half a window), so most tokens are predicted from at least half a
    window of context.
    """
    device = _device_of(model)
    tokens = torch.tensor(list(ids), dtype=torch.int64, device=device)
    window = min(context_length, len(ids))
    step = stride if stride is not None else max(1, window // 2)
    step = min(step, window - 1)
    was_training = model.training
    model.eval()
    total_nll = 0.0
    scored = 0
    try:
        for start, end, first_scored in windows(len(ids), window, step):
            logits = model(tokens[None, start:end])[0].float()
            # logits at position p predict token p+1; the window scores first_scored..end-1.
            predicting = logits[first_scored - 1 - start : end - 1 - start]
            targets = tokens[first_scored:end]
            nll = nn.functional.cross_entropy(predicting, targets, reduction="sum")
            total_nll += float(nll.double())
            scored += end - first_scored
    finally:
        model.train(was_training)
    return math.exp(total_nll / scored)


def perplexity_gate(before: float, after: float, max_increase: float) -> str | None:
    """None when `after` is within `max_increase` (relative) of `before`; else why not.

    The message reads well as a Kubernetes condition message, e.g. "perplexity rose 7.3%
    (12.1 → 13.0) above maxPerplexityIncrease 5%".
    """
    if not math.isfinite(after):
        return (
            f"perplexity after compression is not finite ({after}; before {before:.2f}): the "
            "compressed model overflows; use another precision or less compression"
        )
    increase = relative_increase(before, after)
    if increase <= max_increase + 1e-9:  # exactly at the limit passes, float rounding aside
        return None
    return (
        f"perplexity rose {_percent(increase)} ({before:.2f} → {after:.2f}) above "
        f"maxPerplexityIncrease {_percent(max_increase)}"
    )


def relative_increase(before: float, after: float) -> float:
    return (after - before) / before


def _percent(fraction: float) -> str:
    value = f"{fraction * 100:.1f}".removesuffix(".0")
    return f"{value}%"


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of every parameter's and buffer's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.hexdigest()


def baseline_key(weights: str, ids: Sequence[int], context_length: int, stride: int | None) -> str:
    digest = hashlib.sha256()
    digest.update(f"v{_METHOD_VERSION};{weights};{context_length};{stride};".encode())
    digest.update(",".join(map(str, ids)).encode())
    return digest.hexdigest()[:32]


@dataclass
class BaselineCache:
    """Where the uncompressed perplexity is remembered across pod starts.

    Reads look in the model directory, then in the cache directory. Writes go to the model
    directory when it is writable, else to the cache directory (the `cache_dir` argument,
    else $ELASTICLM_CACHE_DIR, else ~/.cache/elasticlm); when neither can be written the
    figure is simply not remembered, and the next start computes it again.
    """

    model_dir: Path | None
    cache_dir: Path | None = None

    def _candidates(self) -> list[Path]:
        places = []
        if self.model_dir is not None:
            places.append(self.model_dir / CACHE_FILE)
        fallback = self.cache_dir or default_cache_dir()
        if self.model_dir is not None:
            # One model directory's entries apart from another's, in a shared cache dir.
            name = hashlib.sha256(str(self.model_dir.resolve()).encode()).hexdigest()[:16]
            places.append(fallback / f"perplexity-{name}.json")
        else:
            places.append(fallback / "perplexity.json")
        return places

    def get(self, key: str) -> float | None:
        for path in self._candidates():
            entry = _read_entries(path).get(key)
            if isinstance(entry, dict) and isinstance(entry.get("perplexity"), int | float):
                return float(entry["perplexity"])
        return None

    def put(self, key: str, value: float, details: dict[str, Any]) -> Path | None:
        """Remember `value` under `key`; returns the file written, None when none could be."""
        for path in self._candidates():
            entries = _read_entries(path)
            entries[key] = {"perplexity": value, **details}
            try:
                write_atomically(path, json.dumps(entries, indent=2, sort_keys=True) + "\n")
                path.chmod(0o644)  # pods of other users share the model directory
            except OSError as exc:
                log.info("Could not cache the baseline perplexity in %s: %s", path, exc)
                continue
            return path
        return None


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "elasticlm"


def _read_entries(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _device_of(model: nn.Module) -> torch.device:
    if isinstance(model, LlamaModel):
        return model.embed_tokens.weight.device
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
