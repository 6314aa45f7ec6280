"""What the server serves: a model with its tokenizer, chat template and stop tokens.

Two sources:

- a Hugging Face Llama directory: config.json, safetensors weights and tokenizer.json,
  optionally tokenizer_config.json (special tokens, chat template),
  chat_template.jinja and generation_config.json (end-of-text ids). What
  `export_hf_llama` writes and real models such as SmolLM2 both qualify.
- the checkpoint directory of an LMTrainingJob: its newest complete `step-XXXXXXXX`
  (or a chosen step), converted at load. The architecture comes from the checkpoint's
  metadata (checkpoints record it) or else from the job's final export next to it
  (`export/config.json`); the tokenizer from `--tokenizer`, `<dir>/tokenizer` (where a
  job saves the tokenizer it built) or `<dir>/export`.

Every problem is a `ModelLoadError` whose message says what is missing and where.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from lmworker import checkpoint as ckpt
from lmworker import tokenizer as lm_tokenizer
from lmworker.config import ModelConfig
from lmworker.hf_export import load_hf_llama, model_config_from_hf
from lmworker.model import LlamaModel

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOKENIZER_FILE = "tokenizer.json"


class ModelLoadError(Exception):
    """The model cannot be served as given; restarting will not help."""


@dataclass(frozen=True)
class ServedModel:
    model: LlamaModel
    config: ModelConfig
    tokenizer: Tokenizer
    # The model's own chat template (Jinja), or None for the server's plain default.
    chat_template: str | None
    # bos_token, eos_token, ...: what chat templates refer to.
    special_tokens: dict[str, str]
    # Generation ends at any of these (end of text, end of turn).
    stop_token_ids: frozenset[int]
    source: str  # where it came from, for the log
    dtype: str  # fp32 | bf16 | fp16


class TextEncoder(lm_tokenizer.Tokenizer):
    """A served model's tokenizer as `lmworker.tokenizer.Tokenizer`: what the perplexity
    gate (lmworker.compression) encodes held-out text with."""

    kind = "HF"

    def __init__(self, served: ServedModel) -> None:
        self.hf = served.tokenizer
        self._stop_ids = sorted(served.stop_token_ids)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return str(self.hf.decode(list(ids), skip_special_tokens=True))

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size(with_added_tokens=True))

    @property
    def eos_id(self) -> int:
        if not self._stop_ids:
            raise ValueError("the served model has no end-of-text token")
        return self._stop_ids[0]

    def to_hf(self) -> Tokenizer:
        return self.hf


@dataclass(frozen=True)
class TokenizerFiles:
    tokenizer: Tokenizer
    chat_template: str | None
    special_tokens: dict[str, str]
    eos_ids: frozenset[int]


def load_model_dir(path: str | Path, dtype: str = "fp32") -> ServedModel:
    """A Hugging Face Llama directory."""
    root = Path(path)
    if not root.is_dir():
        raise ModelLoadError(f"--model-dir {root}: no such directory")
    try:
        model, cfg = load_hf_llama(root)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"--model-dir {root}: {exc}") from exc
    except Exception as exc:  # safetensors' and torch's own errors for corrupt files
        raise ModelLoadError(f"--model-dir {root}: the weights do not load: {exc}") from exc
    files = read_tokenizer_dir(root)
    eos = files.eos_ids | _config_eos_ids(root)
    return _served(model, cfg, files, eos, f"Hugging Face directory {root}", dtype)


def load_checkpoint(
    path: str | Path,
    step: int | None = None,
    dtype: str = "fp32",
    tokenizer_dir: str | Path | None = None,
) -> ServedModel:
    """A checkpoint of an LMTrainingJob: the newest complete one, or `step`'s."""
    root = Path(path)
    if not root.is_dir():
        raise ModelLoadError(f"--checkpoint {root}: no such directory")
    found = ckpt.complete_checkpoints(root)
    if not found:
        raise ModelLoadError(
            f"--checkpoint {root}: no complete checkpoint (a step-XXXXXXXX directory with "
            f"its .metadata and {ckpt.META}); is this the job's checkpoint path?"
        )
    chosen = found[-1] if step is None else next((c for c in found if c.step == step), None)
    if chosen is None:
        steps = ", ".join(str(c.step) for c in found)
        raise ModelLoadError(f"--step {step}: {root} has checkpoints of steps {steps} only")
    cfg = _checkpoint_model_config(root, chosen.path)
    model = LlamaModel(cfg)
    try:
        ckpt.load(chosen.path, {"model": model.state_dict()})
    except Exception as exc:  # DCP raises plain exceptions for missing or misshapen tensors
        raise ModelLoadError(
            f"{chosen.path}: the weights do not load into the recorded architecture: {exc}"
        ) from exc
    files = read_tokenizer_dir(_checkpoint_tokenizer_dir(root, tokenizer_dir))
    return _served(model, cfg, files, files.eos_ids, f"checkpoint {chosen.path}", dtype)


def read_tokenizer_dir(directory: Path) -> TokenizerFiles:
    """tokenizer.json, and what tokenizer_config.json and chat_template.jinja add."""
    file = directory / TOKENIZER_FILE
    if not file.is_file():
        raise ModelLoadError(f"{directory}: no {TOKENIZER_FILE}; the server needs the tokenizer")
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # the tokenizers library raises plain Exceptions
        raise ModelLoadError(
            f"{file}: not a tokenizer the tokenizers library reads: {exc}"
        ) from exc
    # Some tokenizer.json files carry truncation or padding settings meant for training.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    config = _read_json(directory / "tokenizer_config.json") or {}
    special = special_tokens(config)
    eos_ids = frozenset(
        i for i in (tokenizer.token_to_id(special.get("eos_token", "")),) if i is not None
    )
    return TokenizerFiles(tokenizer, chat_template_of(directory, config), special, eos_ids)


def special_tokens(tokenizer_config: dict[str, Any]) -> dict[str, str]:
    """bos_token, eos_token, ... from tokenizer_config.json (plain or AddedToken form)."""
    out: dict[str, str] = {}
    for key, value in tokenizer_config.items():
        if not key.endswith("_token"):
            continue
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


def chat_template_of(directory: Path, tokenizer_config: dict[str, Any]) -> str | None:
    """The model's chat template, where transformers looks for it, or None."""
    jinja = directory / "chat_template.jinja"  # transformers >= 4.50 saves it here
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = tokenizer_config.get("chat_template")
    if template is None:
        template = (_read_json(directory / "chat_template.json") or {}).get("chat_template")
    if isinstance(template, list):  # named templates: the default one serves chat
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) and template.strip() else None


def _served(
    model: LlamaModel,
    cfg: ModelConfig,
    files: TokenizerFiles,
    stop_ids: frozenset[int],
    source: str,
    dtype: str,
) -> ServedModel:
    vocab = files.tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab > cfg.vocab_size:
        raise ModelLoadError(
            f"{source}: the tokenizer has {vocab} tokens but the model only {cfg.vocab_size}"
        )
    if dtype not in DTYPES:
        raise ModelLoadError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    model = model.to(DTYPES[dtype]).eval()
    model.requires_grad_(False)
    return ServedModel(
        model,
        cfg,
        files.tokenizer,
        files.chat_template,
        files.special_tokens,
        frozenset(i for i in stop_ids if 0 <= i < cfg.vocab_size),
        source,
        dtype,
    )


def _config_eos_ids(root: Path) -> frozenset[int]:
    """eos_token_id of generation_config.json and config.json (a number or a list)."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        value = (_read_json(root / name) or {}).get("eos_token_id")
        values = value if isinstance(value, list) else [value]
        ids.update(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return frozenset(ids)


def _checkpoint_model_config(root: Path, step_dir: Path) -> ModelConfig:
    recorded = ckpt.read_meta(step_dir).get("model")
    if isinstance(recorded, dict):
        try:
            return ModelConfig(**recorded)
        except TypeError as exc:
            raise ModelLoadError(
                f"{step_dir}: the recorded architecture is invalid: {exc}"
            ) from exc
    export_config = _read_json(root / "export" / "config.json")
    if export_config is not None:
        try:
            return model_config_from_hf(export_config)
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{root / 'export' / 'config.json'}: {exc}") from exc
    raise ModelLoadError(
        f"{step_dir}: the checkpoint does not record its architecture (it predates that) and "
        f"{root / 'export'} has no config.json; serve the job's export with --model-dir instead"
    )


def _checkpoint_tokenizer_dir(root: Path, explicit: str | Path | None) -> Path:
    if explicit is not None:
        return Path(explicit)
    for candidate in (root / "tokenizer", root / "export"):
        if (candidate / TOKENIZER_FILE).is_file():
            return candidate
    raise ModelLoadError(
        f"--checkpoint {root}: no tokenizer in {root / 'tokenizer'} or {root / 'export'}; "
        "the job used another one (its tokenizerPath, or its initial HF model's): pass "
        "--tokenizer DIR"
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data
