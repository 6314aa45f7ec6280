"""Export to, and load from, a Hugging Face Llama directory (config.json + safetensors).

The exported directory loads with `transformers.LlamaForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained`, and gives the same logits as `LlamaModel`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmworker.config import ModelConfig
from lmworker.files import replace_directory
from lmworker.model import LlamaModel
from lmworker.tokenizer import Tokenizer

WEIGHTS_FILE = "model.safetensors"
# What a fine-tuned model keeps of the directory it started from: its tokenizer (chat
# template included) and its generation settings.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
# Buffers some older checkpoints stored; they are derived from the config.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_name(name: str) -> str:
    """Our parameter name -> Hugging Face's (LlamaForCausalLM keeps lm_head at the top)."""
    return name if name.startswith("lm_head.") else f"model.{name}"


def hf_config(cfg: ModelConfig, eos_id: int) -> dict[str, Any]:
    """config.json for a LlamaForCausalLM with this shape (read by transformers 4.45+)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.hidden_size // cfg.heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": cfg.tie_embeddings,
        # There is no separate beginning-of-text token: end-of-text serves, as in GPT-2.
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def export_hf_llama(
    model: LlamaModel,
    cfg: ModelConfig,
    tokenizer: Tokenizer,
    out_dir: str | os.PathLike[str],
    *,
    based_on: str | os.PathLike[str] | None = None,
) -> Path:
    """Write config.json, model.safetensors (float32), generation_config.json and the
    tokenizer files into `out_dir`, replacing what was there.

    `based_on` is the Hugging Face directory training started from, when the model kept
    its tokenizer: its tokenizer files (chat template included), generation_config.json
    and special token ids are carried over instead of ours, so a fine-tuned chat model
    still chats.

    Everything is written into a temporary sibling directory first, so `out_dir` is
    never seen half written: an existing one is moved aside, the new one renamed into
    place, and the old one deleted.
    """
    if model.cfg != cfg:
        raise ValueError("the model was built from a different ModelConfig than the one given")
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}"
        )
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tensors = {
            hf_name(name): t.detach().to(device="cpu", dtype=torch.float32).contiguous()
            for name, t in model.state_dict().items()
            if not (cfg.tie_embeddings and name == "lm_head.weight")
        }
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        eos = tokenizer.eos_id
        config = hf_config(cfg, eos)
        if based_on is not None:
            source = Path(based_on)
            source_config = json.loads((source / "config.json").read_text())
            for key in _TOKEN_ID_KEYS:
                config.pop(key, None)
                if source_config.get(key) is not None:
                    config[key] = source_config[key]
            _write_json(tmp / "config.json", config)
            for name in TOKENIZER_FILES:
                if (source / name).is_file():
                    shutil.copyfile(source / name, tmp / name)
            if not (tmp / "generation_config.json").is_file():
                generation: dict[str, Any] = {"_from_model_config": True}
                for key in ("bos_token_id", "eos_token_id"):
                    if key in config:
                        generation[key] = config[key]
                _write_json(tmp / "generation_config.json", generation)
        else:
            _write_json(tmp / "config.json", config)
            _write_json(
                tmp / "generation_config.json",
                {"_from_model_config": True, "bos_token_id": eos, "eos_token_id": eos},
            )
            tokenizer.save(tmp)
        replace_directory(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_config_from_hf(config: dict[str, Any]) -> ModelConfig:
    """Our ModelConfig for a Hugging Face Llama config.json; ValueError for what we lack."""
    model_type = config.get("model_type")
    if model_type != "llama":
        raise ValueError(f"config.json: model_type is {model_type!r}; only 'llama' is supported")
    for field in ("attention_bias", "mlp_bias"):
        if config.get(field):
            raise ValueError(f"config.json: {field} is true; this model has no biases")
    rope_scaling = config.get("rope_scaling")
    if rope_scaling and _rope_type(rope_scaling) != "default":
        raise ValueError(
            f"config.json: rope_scaling is {rope_scaling}; only plain RoPE is supported"
        )
    rope_theta = config.get("rope_theta")
    rope_parameters = config.get("rope_parameters")
    if rope_parameters:  # transformers 5 keeps rope_theta here
        rope_type = rope_parameters.get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(
                f"config.json: rope_parameters.rope_type is {rope_type!r}; only plain RoPE "
                "('default') is supported"
            )
        rope_theta = rope_parameters.get("rope_theta", rope_theta)
    hidden_act = config.get("hidden_act", "silu")
    if hidden_act != "silu":
        raise ValueError(f"config.json: hidden_act is {hidden_act!r}; only 'silu' is supported")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = config.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != hidden:
        raise ValueError(
            f"config.json: head_dim ({head_dim}) x num_attention_heads ({heads}) differs from "
            f"hidden_size ({hidden}); only head_dim = hidden_size / heads is supported"
        )
    return ModelConfig(
        vocab_size=int(config["vocab_size"]),
        layers=int(config["num_hidden_layers"]),
        hidden_size=hidden,
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        intermediate_size=int(config["intermediate_size"]),
        context_length=int(config["max_position_embeddings"]),
        rope_theta=float(rope_theta if rope_theta is not None else 10000.0),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def _rope_type(rope: Any) -> Any:
    """The RoPE variant of a rope_scaling entry ("type" in older configs)."""
    if not isinstance(rope, dict):
        return rope
    return rope.get("rope_type", rope.get("type"))


def load_hf_llama(directory: str | os.PathLike[str]) -> tuple[LlamaModel, ModelConfig]:
    """A float32 LlamaModel from a Hugging Face Llama directory (single or sharded weights)."""
    root = Path(directory)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: not a Hugging Face model directory")
    cfg = model_config_from_hf(json.loads(config_file.read_text()))
    weights = _read_weights(root)
    model = LlamaModel(cfg)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        ours = name.removeprefix("model.") if name.startswith("model.") else name
        state[ours] = tensor
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        if "embed_tokens.weight" in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{root}: weights do not match the config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.load_state_dict(state)
    return model, cfg


def _read_weights(root: Path) -> dict[str, torch.Tensor]:
    single = root / WEIGHTS_FILE
    if single.is_file():
        return load_file(str(single))
    index = root / WEIGHTS_INDEX_FILE
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        weights: dict[str, torch.Tensor] = {}
        for shard in shards:
            weights.update(load_file(str(root / shard)))
        return weights
    raise FileNotFoundError(
        f"no {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} in {root}: only safetensors weights load"
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
