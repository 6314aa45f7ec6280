"""Export to the Hugging Face Llama format and back."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from lmworker.config import ModelConfig
from lmworker.hf_export import export_hf_llama, load_hf_llama
from lmworker.model import LlamaModel, init_weights
from lmworker.tokenizer import ByteTokenizer

CFG = ModelConfig(
    vocab_size=257,
    layers=2,
    hidden_size=64,
    heads=4,
    kv_heads=2,
    intermediate_size=96,
    context_length=64,
    rope_theta=5000.0,
)


def trained_like(cfg: ModelConfig) -> LlamaModel:
    model = LlamaModel(cfg)
    init_weights(model, 3)
    with torch.no_grad():  # norms away from 1, so a dropped norm weight would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_transformers_gives_the_same_logits(tmp_path: Path, tied: bool) -> None:
    cfg = dataclasses.replace(CFG, tie_embeddings=tied)
    model = trained_like(cfg)
    tok = ByteTokenizer()
    out = export_hf_llama(model, cfg, tok, tmp_path / "export")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json"} <= names
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names

    hf = LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").eval()  # type: ignore[no-untyped-call]
    assert hf.config.tie_word_embeddings is tied
    text = "The old owl sees two boxes."
    hf_tok = AutoTokenizer.from_pretrained(out)
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    assert ids == tok.encode(text)
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        ours = model(input_ids)
        theirs = hf(input_ids).logits
    torch.testing.assert_close(theirs.float(), ours, atol=1e-4, rtol=1e-4)


def test_load_hf_llama_round_trip(tmp_path: Path) -> None:
    model = trained_like(dataclasses.replace(CFG, tie_embeddings=False))
    export_hf_llama(model, model.cfg, ByteTokenizer(), tmp_path / "m")
    loaded, cfg = load_hf_llama(tmp_path / "m")
    assert cfg == model.cfg
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    tied = trained_like(CFG)
    export_hf_llama(tied, CFG, ByteTokenizer(), tmp_path / "t")
    loaded, cfg = load_hf_llama(tmp_path / "t")
    assert cfg == CFG
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, tied.embed_tokens.weight)


def test_export_replaces_an_existing_directory(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "stale.bin").write_text("old")
    export_hf_llama(trained_like(CFG), CFG, ByteTokenizer(), out)
    assert not (out / "stale.bin").exists()
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporaries left


def _with_config(tmp_path: Path, **changes: object) -> Path:
    out = export_hf_llama(trained_like(CFG), CFG, ByteTokenizer(), tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    config.update(changes)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_type"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"model_type": "mistral"}, "model_type"),
        ({"head_dim": 32}, "head_dim"),
    ],
)
def test_unsupported_configs_are_rejected_by_field(
    tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        load_hf_llama(_with_config(tmp_path, **changes))


def test_transformers_5_rope_parameters_are_read(tmp_path: Path) -> None:
    out = _with_config(tmp_path, rope_parameters={"rope_type": "default", "rope_theta": 777.0})
    _, cfg = load_hf_llama(out)
    assert cfg.rope_theta == 777.0


def test_a_fine_tuned_export_keeps_the_tokenizer_it_started_from(tmp_path: Path) -> None:
    """Chat template, special tokens and generation settings come from `based_on`."""
    import json

    source = export_hf_llama(trained_like(CFG), CFG, ByteTokenizer(), tmp_path / "source")
    config = json.loads((source / "config.json").read_text())
    config.update(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    (source / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text())
    tokenizer_config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (source / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (source / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "top_p": 0.9}))
    (source / ".elasticlm-perplexity.json").write_text("{}")  # a cache: never carried over

    tuned = trained_like(CFG)
    out = export_hf_llama(tuned, CFG, ByteTokenizer(), tmp_path / "out", based_on=source)
    exported = json.loads((out / "config.json").read_text())
    assert (exported["bos_token_id"], exported["eos_token_id"], exported["pad_token_id"]) == (
        1,
        2,
        2,
    )
    assert json.loads((out / "generation_config.json").read_text())["top_p"] == 0.9
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert not (out / ".elasticlm-perplexity.json").exists()
    hf_tok = AutoTokenizer.from_pretrained(out)
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "hi"
    loaded, _ = load_hf_llama(out)
    assert torch.equal(loaded.embed_tokens.weight, tuned.embed_tokens.weight)
