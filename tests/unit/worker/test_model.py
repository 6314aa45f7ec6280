"""LlamaModel: shapes, causality, the KV cache, generation, initialisation."""

import dataclasses
from typing import Any

import pytest
import torch

from lmworker.config import ModelConfig, default_intermediate_size
from lmworker.model import DecoderLayer, LlamaModel, count_parameters, generate, init_weights

TINY = ModelConfig(
    vocab_size=257,
    layers=2,
    hidden_size=64,
    heads=4,
    kv_heads=4,
    intermediate_size=default_intermediate_size(64),
    context_length=64,
)
GQA = dataclasses.replace(TINY, kv_heads=2, tie_embeddings=False)


def make_model(cfg: ModelConfig, seed: int = 1) -> LlamaModel:
    model = LlamaModel(cfg)
    init_weights(model, seed)
    return model.eval()


def random_ids(cfg: ModelConfig, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (batch, length), generator=gen)


@pytest.mark.parametrize("cfg", [TINY, GQA], ids=["mha", "gqa"])
def test_forward_shape_and_dtype(cfg: ModelConfig) -> None:
    logits = make_model(cfg)(random_ids(cfg, 3, 10))
    assert logits.shape == (3, 10, cfg.vocab_size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("cfg", [TINY, GQA], ids=["mha", "gqa"])
def test_causal_future_tokens_do_not_change_earlier_logits(cfg: ModelConfig) -> None:
    model = make_model(cfg)
    ids = random_ids(cfg, 2, 16)
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % cfg.vocab_size
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("cfg", [TINY, GQA], ids=["mha", "gqa"])
def test_kv_cache_incremental_matches_full_forward(cfg: ModelConfig) -> None:
    model = make_model(cfg)
    ids = random_ids(cfg, 2, 20)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_kv_cache(2, 20)
        # Prefill 7, then a chunk of 5 (a prefix is cached: explicit mask), then 1 by 1.
        parts = [model(ids[:, :7], cache), model(ids[:, 7:12], cache)]
        parts += [model(ids[:, t : t + 1], cache) for t in range(12, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_context_and_cache_limits_are_enforced() -> None:
    model = make_model(TINY)
    with pytest.raises(ValueError, match="context length"):
        model(random_ids(TINY, 1, TINY.context_length + 1))
    cache = model.new_kv_cache(1, 4)
    with pytest.raises(ValueError, match="KV cache"):
        model(random_ids(TINY, 1, 5), cache)


def test_generate_greedy_is_deterministic_and_matches_argmax() -> None:
    model = make_model(TINY)
    prompt = random_ids(TINY, 2, 5)
    out = generate(model, prompt, max_new_tokens=8)
    assert out.shape == (2, 13)
    assert torch.equal(out[:, :5], prompt)
    assert torch.equal(out, generate(model, prompt, max_new_tokens=8))
    # Without a cache: each new token is the argmax of a full forward over what came before.
    with torch.no_grad():
        for t in range(5, 13):
            assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])


def test_generate_sampling_follows_the_generator_and_stops_at_eos() -> None:
    model = make_model(GQA)
    prompt = random_ids(GQA, 3, 4)

    def sample(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(model, prompt, 10, temperature=1.0, top_k=20, generator=gen)

    assert torch.equal(sample(3), sample(3))
    greedy = generate(model, prompt, 10)
    eos = int(greedy[0, 6])  # row 0 produces this token at its third step
    stopped = generate(model, prompt, 10, eos_id=eos)
    assert stopped.shape[1] <= greedy.shape[1]
    assert torch.equal(stopped[0, :7], greedy[0, :7])
    row = stopped[0, 4:].tolist()
    first = row.index(eos)
    assert all(t == eos for t in row[first:])


def test_init_weights_is_deterministic_and_ties_embeddings() -> None:
    a, b, c = LlamaModel(TINY), LlamaModel(TINY), LlamaModel(TINY)
    init_weights(a, 7)
    torch.manual_seed(123)  # the global RNG must not matter
    init_weights(b, 7)
    init_weights(c, 8)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.embed_tokens.weight, c.embed_tokens.weight)
    assert a.lm_head.weight is a.embed_tokens.weight
    assert torch.equal(a.norm.weight, torch.ones(TINY.hidden_size))
    layer = a.layers[0]
    assert isinstance(layer, DecoderLayer)
    residual = layer.mlp.down_proj.weight.std().item()
    assert residual == pytest.approx(0.02 / 2, rel=0.1)  # 0.02 / sqrt(2 * layers)


def test_parameter_names_follow_hugging_face_llama() -> None:
    names = set(LlamaModel(GQA).state_dict())
    expected = {"embed_tokens.weight", "norm.weight", "lm_head.weight"}
    for i in range(GQA.layers):
        p = f"layers.{i}."
        expected |= {
            p + "input_layernorm.weight",
            p + "post_attention_layernorm.weight",
            *(p + f"self_attn.{n}_proj.weight" for n in "qkvo"),
            *(p + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")),
        }
    assert names == expected


def test_count_parameters_counts_tied_weights_once() -> None:
    h, v, i, layers = 64, 257, default_intermediate_size(64), 2
    per_layer = 4 * h * h + 3 * h * i + 2 * h
    tied = v * h + layers * per_layer + h
    assert count_parameters(LlamaModel(TINY)) == tied
    untied = dataclasses.replace(TINY, tie_embeddings=False)
    assert count_parameters(LlamaModel(untied)) == tied + v * h


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_size": 66}, "multiple of model.heads"),
        ({"kv_heads": 3}, "multiple of model.kv_heads"),
        ({"layers": 0}, "model.layers must be positive"),
    ],
)
def test_bad_shapes_are_rejected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LlamaModel(dataclasses.replace(TINY, **change))
