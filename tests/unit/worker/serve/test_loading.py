"""Loading what the server serves: HF directories and training checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lmworker.config import ModelConfig, TrainingConfig, WorkerConfig
from lmworker.corpus import write_corpus
from lmworker.hf_export import model_config_from_hf
from lmworker.model import LlamaModel
from lmworker.serve.loading import (
    ModelLoadError,
    chat_template_of,
    load_checkpoint,
    load_model_dir,
    special_tokens,
)
from lmworker.trainer import Trainer
from tests.tiny_models import TINY, export_tiny, tiny_model

# SmolLM2-135M-Instruct's config.json, written out from its published values (no model
# hub here to read the file from).
SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 576,
    "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536,
    "is_llama_config": True,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "pad_token_id": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_interleaved": False,
    "rope_scaling": None,
    "rope_theta": 100000,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.42.3",
    "use_cache": True,
    "vocab_size": 49152,
}


def logits(model: LlamaModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(torch.tensor([ids]))[0, -1]
        return out.float()


def test_smollm2_config() -> None:
    assert model_config_from_hf(SMOLLM2_CONFIG) == ModelConfig(
        vocab_size=49152,
        layers=30,
        hidden_size=576,
        heads=9,
        kv_heads=3,
        intermediate_size=1536,
        context_length=8192,
        rope_theta=100000.0,
        norm_eps=1e-5,
        tie_embeddings=True,
    )
    # Some configs spell plain RoPE out instead of leaving rope_scaling empty.
    explicit = {**SMOLLM2_CONFIG, "rope_scaling": {"rope_type": "default"}}
    assert model_config_from_hf(explicit).rope_theta == 100000.0
    with pytest.raises(ValueError, match="rope_scaling"):
        model_config_from_hf({**SMOLLM2_CONFIG, "rope_scaling": {"rope_type": "llama3"}})


def test_an_exported_directory(tmp_path: Path) -> None:
    directory = export_tiny(tmp_path / "m")
    served = load_model_dir(directory)
    assert served.config == TINY
    assert served.dtype == "fp32"
    assert served.stop_token_ids == {256}
    assert served.chat_template is None
    assert served.special_tokens == {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    assert served.tokenizer.encode("hé", add_special_tokens=False).ids == [104, 195, 169]
    torch.testing.assert_close(logits(served.model, [1, 2, 3]), logits(tiny_model(), [1, 2, 3]))


def test_dtype_and_the_model_s_own_template_and_stop_ids(tmp_path: Path) -> None:
    directory = export_tiny(tmp_path / "m")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["chat_template"] = [
        {"name": "tool_use", "template": "x"},
        {"name": "default", "template": "{{ 1 }}"},
    ]
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 256]}))
    served = load_model_dir(directory, "bf16")
    assert served.model.embed_tokens.weight.dtype == torch.bfloat16
    assert served.dtype == "bf16"
    assert served.chat_template == "{{ 1 }}"
    assert served.stop_token_ids == {3, 256}
    (directory / "chat_template.jinja").write_text("{{ 2 }}")
    assert chat_template_of(directory, config) == "{{ 2 }}"


def test_special_tokens_in_either_form() -> None:
    assert special_tokens(
        {"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "</s>", "x": "y"}
    ) == {"bos_token": "<s>", "eos_token": "</s>"}


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d: shutil.rmtree(d), "no such directory"),
        (lambda d: (d / "config.json").unlink(), "config.json"),
        (lambda d: (d / "model.safetensors").unlink(), "safetensors"),
        (lambda d: (d / "model.safetensors").write_bytes(b"junk"), "weights do not load"),
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json"),
        (lambda d: (d / "tokenizer.json").write_text("{"), "tokenizer"),
        (lambda d: (d / "tokenizer_config.json").write_text("{"), "not valid JSON"),
        (
            lambda d: (d / "config.json").write_text(json.dumps({"model_type": "gpt2"})),
            "only 'llama'",
        ),
    ],
)
def test_a_broken_directory_says_what_is_wrong(tmp_path: Path, damage: object, words: str) -> None:
    directory = export_tiny(tmp_path / "m")
    damage(directory)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=words):
        load_model_dir(directory)


def trained_checkpoints(tmp: Path) -> Trainer:
    corpus = tmp / "corpus.txt"
    write_corpus(corpus, n_bytes=20_000, seed=0)
    cfg = WorkerConfig(
        job="t",
        namespace="default",
        model=ModelConfig(
            vocab_size=257,
            layers=1,
            hidden_size=32,
            heads=2,
            kv_heads=1,
            intermediate_size=64,
            context_length=16,
        ),
        training=TrainingConfig(
            steps=4,
            global_batch_size=4,
            micro_batch_size=2,
            learning_rate=1e-2,
            warmup_steps=1,
            weight_decay=0.1,
            grad_clip=1.0,
            precision="fp32",
            sync="DDP",
            local_sgd_sync_steps=2,
            seed=4,
        ),
        data_path=str(corpus),
        checkpoint_dir=str(tmp / "ckpt"),
    )
    trainer = Trainer(cfg, torch.device("cpu"))
    trainer.init_fresh()
    for _ in range(2):
        trainer.train_step(trainer.model, 0, 1, ddp=False)
        trainer.save_checkpoint({"round": 1}, wait=True)
    return trainer


def test_a_training_checkpoint(tmp_path: Path) -> None:
    trainer = trained_checkpoints(tmp_path)
    root = tmp_path / "ckpt"
    newest = load_checkpoint(root)
    assert newest.config == trainer.model_config
    assert "step-00000002" in newest.source
    assert newest.stop_token_ids == {256}
    torch.testing.assert_close(logits(newest.model, [1, 2]), logits(trainer.model, [1, 2]))
    older = load_checkpoint(root, step=1)
    assert not torch.equal(logits(older.model, [1, 2]), logits(newest.model, [1, 2]))
    with pytest.raises(ModelLoadError, match="steps 1, 2 only"):
        load_checkpoint(root, step=7)


def test_checkpoint_fallbacks_and_errors(tmp_path: Path) -> None:
    trained_checkpoints(tmp_path)
    root = tmp_path / "ckpt"
    # Older checkpoints did not record the architecture: the job's export supplies it.
    for step_dir in root.glob("step-*"):
        meta = json.loads((step_dir / "elasticlm.json").read_text())
        del meta["model"]
        (step_dir / "elasticlm.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="does not record its architecture"):
        load_checkpoint(root)
    # The job writes <dir>/export (config.json and tokenizer) when training ends.
    tokenizer = root / "tokenizer"
    export = root / "export"
    tokenizer.rename(export)
    (export / "config.json").write_text(
        json.dumps(
            {
                **SMOLLM2_CONFIG,
                "vocab_size": 257,
                "hidden_size": 32,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "max_position_embeddings": 16,
                "rope_theta": 10000.0,
                "rms_norm_eps": 1e-5,
            }
        )
    )
    assert load_checkpoint(root).config.hidden_size == 32  # tokenizer from export/ too
    (export / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="--tokenizer"):
        load_checkpoint(root)
    with pytest.raises(ModelLoadError, match="no complete checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_checkpoint(tmp_path / "absent")
