"""Turn a GGUF file (llama.cpp's format) into a Hugging Face Llama model directory.

    python -m lmworker.import_gguf MODEL.gguf OUTDIR

OUTDIR gets config.json, model.safetensors (float32), generation_config.json,
tokenizer.json and tokenizer_config.json (with the chat template, when the GGUF has
one): a normal directory that `lmworker.hf_export.load_hf_llama` and
`transformers.LlamaForCausalLM.from_pretrained` both load. It is written into a
temporary sibling first and renamed into place, so it is never seen half written.

transformers does the reading (`from_pretrained(dir, gguf_file=...)`, which needs the
`gguf` and `accelerate` packages: `pip install 'elasticlm[gguf]'`): it dequantises every
tensor type llama.cpp writes, undoes llama.cpp's permutation of the q/k projections and
rebuilds the tokenizer from the GGUF vocabulary and merges. Writing our own reader would
duplicate all three. transformers refuses to `save_pretrained` a GGUF-loaded model, so
its weights are moved into a fresh `LlamaForCausalLM` built from the same config, which
saves normally. Quantised weights come out dequantised: the directory holds what the
GGUF's 4-bit blocks decode to, not the original model's weights.

Only the Llama architecture is accepted, since that is what `load_hf_llama` serves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from lmworker.files import replace_directory, write_atomically
from lmworker.hf_export import WEIGHTS_FILE, model_config_from_hf

# Bumped whenever the directory written changes, so caches of imports can key on it.
FORMAT_VERSION = 3


def import_gguf(gguf_file: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write the Hugging Face Llama directory of `gguf_file` to `out_dir` (replaced)."""
    # Imported here: the worker image serves without transformers; only importing needs it.
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
    )

    source = Path(gguf_file)
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: expected a .gguf file")
    target = Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
        config = loaded.config
        if not isinstance(config, LlamaConfig):
            raise ValueError(
                f"{source}: the architecture is {config.model_type!r}; only llama is supported"
            )
        # The GGUF loader marks the config as quantised; the saved weights are plain floats.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            fresh = LlamaForCausalLM(config)
        fresh.load_state_dict(loaded.state_dict(), assign=True)
        fresh.tie_weights()
        fresh.generation_config = loaded.generation_config
        fresh.save_pretrained(tmp, safe_serialization=True)
        # The chat template goes into tokenizer_config.json (not chat_template.jinja), where
        # every transformers version and our server look for it.
        tokenizer.save_pretrained(tmp, save_jinja_files=False)
        check_directory(tmp)
        _portable_tokenizer_config(tmp / "tokenizer_config.json")
        # mkdtemp and the writers made it private; serving pods may read as other users.
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o644)
        replace_directory(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class every transformers version knows; drop load-time keys.

    transformers 5 writes its new `TokenizersBackend`, which 4.x cannot resolve; the
    `PreTrainedTokenizerFast` alias loads the same tokenizer.json in both.
    """
    config: dict[str, Any] = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only", "backend"):
        config.pop(key, None)
    write_atomically(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def check_directory(directory: Path) -> None:
    """Fail now, not at serving time, when the result is not what load_hf_llama reads."""
    config: dict[str, Any] = json.loads((directory / "config.json").read_text())
    model_config_from_hf(config)
    for name in (WEIGHTS_FILE, "tokenizer.json", "tokenizer_config.json"):
        if not (directory / name).is_file():
            raise RuntimeError(f"the import wrote no {name} into {directory}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmworker.import_gguf",
        description="Convert a GGUF Llama model into a Hugging Face model directory.",
    )
    parser.add_argument("gguf", help="the .gguf file")
    parser.add_argument("out_dir", help="the directory to write (replaced if it exists)")
    args = parser.parse_args(argv)
    try:
        out = import_gguf(args.gguf, args.out_dir)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
