"""A real pretrained model end to end: SmolLM2-135M-Instruct from its GGUF.

The directory comes from the session fixture `smollm2_dir` (tests/smollm2.py): imported
once with `lmworker.import_gguf`, cached across runs. These tests check that our model
reads it exactly as transformers does, answers a chat prompt sensibly, and keeps its
perplexity under int8.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from lmworker.compression import CompressionSettings, prepare_for_serving
from lmworker.hf_export import load_hf_llama
from lmworker.model import LlamaModel, generate
from lmworker.tokenizer import load_tokenizer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> LlamaModel:
    model, _ = load_hf_llama(smollm2_dir)
    return model.eval()


def test_the_import_is_a_normal_hf_directory(smollm2_dir: Path) -> None:
    names = {p.name for p in smollm2_dir.iterdir()}
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in smollm2_dir.iterdir())  # readable
    assert {"config.json", "model.safetensors", "generation_config.json"} <= names
    assert {"tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (
        30,
        576,
        49152,
    )
    tokenizer_config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # transformers 4 too


def test_our_model_gives_the_logits_of_transformers(smollm2_dir: Path, smollm2: LlamaModel) -> None:
    cfg = smollm2.cfg
    assert (cfg.heads, cfg.kv_heads, cfg.rope_theta, cfg.tie_embeddings) == (9, 3, 100000.0, True)
    hf = LlamaForCausalLM.from_pretrained(smollm2_dir).eval()  # type: ignore[no-untyped-call]
    text = "The quick brown fox jumps over the lazy dog. Paris is the capital of"
    ids = torch.tensor([load_tokenizer(smollm2_dir).encode(text)])
    with torch.inference_mode():
        theirs = hf(ids).logits.float()
        ours = smollm2(ids)
        length = ids.shape[1]
        cache = smollm2.new_kv_cache(1, length)
        steps = [smollm2(ids[:, : length - 3], cache)]  # a prefill, then one token at a time
        steps += [smollm2(ids[:, i : i + 1], cache) for i in range(length - 3, length)]
        stepped = torch.cat(steps, dim=1)
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(stepped, theirs, atol=2e-4, rtol=2e-4)


def test_the_chat_template_gets_a_sensible_greedy_answer(
    smollm2_dir: Path, smollm2: LlamaModel
) -> None:
    hf_tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert isinstance(prompt, str)
    ids = torch.tensor([load_tokenizer(smollm2_dir).encode(prompt)])
    end_of_turn = json.loads((smollm2_dir / "generation_config.json").read_text())["eos_token_id"]
    out = generate(smollm2, ids, 24, eos_id=end_of_turn)
    answer = hf_tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_int8_keeps_perplexity_within_three_percent(
    smollm2_dir: Path, smollm2: LlamaModel, tmp_path: Path
) -> None:
    settings = CompressionSettings(
        quantization="int8",
        perplexity_tokens=512,
        max_perplexity_increase=0.03,
        cache_dir=str(tmp_path),
    )
    model, report = prepare_for_serving(
        copy.deepcopy(smollm2), load_tokenizer(smollm2_dir), smollm2_dir, settings
    )
    assert report.refused is None, report.refused
    assert report.perplexity_before is not None
    assert 5 < report.perplexity_before < 50  # a trained model on English prose
    assert report.perplexity_tokens == 512
    assert generate(model, torch.tensor([[1, 2, 3]]), 2).shape == (1, 5)
