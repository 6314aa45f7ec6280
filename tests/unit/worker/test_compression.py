"""Load-time compression on a tiny model: int8, precision, pruning, perplexity, the gate."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmworker import files
from lmworker import perplexity as ppl
from lmworker.compression import (
    CompressionError,
    CompressionSettings,
    cast_to,
    prepare_for_serving,
)
from lmworker.config import ModelConfig
from lmworker.model import MLP, LlamaModel, generate, init_weights
from lmworker.precision import MachineFacts
from lmworker.pruning import (
    block_linears,
    mlp_channel_activation_rms,
    mlp_channel_contributions,
    mlp_channel_norms,
    prune_magnitude,
    prune_structured,
)
from lmworker.quantization import (
    Int8Linear,
    quantize_int8,
    reduce_range_needed,
    smooth_activations,
)
from lmworker.tokenizer import ByteTokenizer

CFG = ModelConfig(
    vocab_size=257,
    layers=2,
    hidden_size=64,
    heads=4,
    kv_heads=2,
    intermediate_size=96,
    context_length=64,
)
EPYC = MachineFacts(
    device_type="cpu",
    cpu_flags=frozenset({"avx512f", "avx512_bf16", "avx512_vnni"}),
    cpu_model="AMD EPYC",
    architecture="x86_64",
)
OLD_X86 = MachineFacts(device_type="cpu", cpu_flags=frozenset({"avx2"}), architecture="x86_64")


def tiny_model(seed: int = 3) -> LlamaModel:
    model = LlamaModel(CFG)
    init_weights(model, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # norms away from 1 and one outlier channel, as trained models have
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5, generator=gen)
        model.embed_tokens.weight[:, 5] *= 20
    return model.eval()


def sample_ids(length: int = 40, batch: int = 2) -> torch.Tensor:
    return torch.randint(
        0, CFG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1)
    )


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- int8 -------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothed", [True, False], ids=["smoothquant", "plain"])
@pytest.mark.parametrize("reduce_range", [False, True], ids=["8bit", "7bit"])
def test_int8_logits_stay_close_to_fp32(smoothed: bool, reduce_range: bool) -> None:
    model = tiny_model()
    ids = sample_ids()
    with torch.inference_mode():
        reference = model(ids)
    calibration = sample_ids(64, 1) if smoothed else None
    quantize_int8(model, calibration, reduce_range=reduce_range)
    linears = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert len(linears) == CFG.layers * 7 + 1  # q k v o gate up down per block, and lm_head
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.inference_mode():
        quantized = model(ids)
    assert relative_error(quantized, reference) < (0.05 if reduce_range else 0.03)


def test_int8_model_decodes_with_the_kv_cache_as_without() -> None:
    model = quantize_int8(tiny_model(), sample_ids(64, 1), reduce_range=False)
    prompt = sample_ids(8, 1)
    cached = generate(model, prompt, 6)
    ids = prompt
    for _ in range(6):  # no cache: the whole sequence each step
        with torch.inference_mode():
            ids = torch.cat((ids, model(ids)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(cached, ids)


def test_int8_linear_scales_each_row_on_its_own() -> None:
    linear = torch.nn.Linear(32, 16, bias=False)
    quantized = Int8Linear(linear, reduce_range=False)
    small = torch.randn(1, 32) * 0.01
    huge = torch.randn(1, 32) * 1000.0
    with torch.inference_mode():
        together = quantized(torch.cat((small, huge)))
        alone = quantized(small)
    # One scale for both rows would round the small row to nothing.
    assert relative_error(together[:1], linear(small).detach()) < 0.02
    assert relative_error(together[:1], alone) < 0.02


def test_smoothing_keeps_the_float_function() -> None:
    model = tiny_model()
    ids = sample_ids()
    with torch.inference_mode():
        reference = model(ids)
    before = copy.deepcopy(model.state_dict())
    smooth_activations(model, sample_ids(64, 1))
    norm = "layers.0.input_layernorm.weight"
    assert not torch.equal(before[norm], model.get_parameter(norm))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), reference, atol=1e-4, rtol=1e-4)


def test_reduce_range_only_on_x86_without_vnni() -> None:
    assert reduce_range_needed(frozenset({"avx2"}), "x86_64")
    assert not reduce_range_needed(frozenset({"avx2", "avx512_vnni"}), "x86_64")
    assert not reduce_range_needed(frozenset({"amx_int8"}), "x86_64")
    assert not reduce_range_needed(frozenset({"asimd"}), "aarch64")


# -- precision --------------------------------------------------------------------------


def test_cast_keeps_the_rotary_frequencies_in_float32() -> None:
    model = cast_to(tiny_model(), torch.bfloat16)
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.get_buffer("inv_freq").dtype == torch.float32
    assert generate(model, sample_ids(4, 1), 3).shape == (1, 7)


# -- pruning ----------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.3, 0.55])
def test_magnitude_pruning_zeroes_exactly_the_smallest(amount: float) -> None:
    model = tiny_model()
    original = {name: linear.weight.detach().clone() for name, linear in block_linears(model)}
    zeroed = prune_magnitude(model, amount)
    assert zeroed == sum(round(amount * w.numel()) for w in original.values())
    for name, linear in block_linears(model):
        weight, before = linear.weight.detach(), original[name]
        is_zero = weight == 0
        assert int(is_zero.sum()) == round(amount * weight.numel()), name
        if 0 < int(is_zero.sum()) < weight.numel():
            assert before[is_zero].abs().max() <= before[~is_zero].abs().min()
        assert torch.equal(weight[~is_zero], before[~is_zero])
    assert torch.equal(model.lm_head.weight, tiny_model().lm_head.weight)  # left whole


def test_structured_pruning_shrinks_the_mlp_and_still_decodes() -> None:
    model = tiny_model()
    norms = [mlp_channel_norms(block.mlp) for block in model.layers if isinstance(block.mlp, MLP)]
    kept = prune_structured(model, 0.3)
    assert kept == 96 - round(0.3 * 96) == model.cfg.intermediate_size
    for block, before in zip(model.layers, norms, strict=True):
        mlp = block.mlp
        assert isinstance(mlp, MLP)
        assert mlp.gate_proj.weight.shape == (kept, 64)
        assert mlp.up_proj.weight.shape == (kept, 64)
        assert mlp.down_proj.weight.shape == (64, kept)
        # The survivors are the strongest channels.
        assert torch.allclose(mlp_channel_norms(mlp).sort().values, before.sort().values[-kept:])
    prompt = sample_ids(8, 2)
    out = generate(model, prompt, 5)
    with torch.inference_mode():  # cached decoding agrees with a full forward pass
        assert torch.equal(model(out[:, :-1])[:, -1].argmax(-1), out[:, -1])


def test_structured_pruning_with_calibration_keeps_the_largest_contributions() -> None:
    model = tiny_model()
    calibration = sample_ids(64, 1)
    rms = mlp_channel_activation_rms(model, calibration)
    expected = [
        torch.topk(mlp_channel_contributions(block.mlp, rms[i]), 48).indices.sort().values
        for i, block in enumerate(model.layers)
        if isinstance(block.mlp, MLP)
    ]
    originals = [model.get_parameter(f"layers.{i}.mlp.down_proj.weight").clone() for i in range(2)]
    assert prune_structured(model, 0.5, calibration) == 48
    for block, kept, down in zip(model.layers, expected, originals, strict=True):
        assert isinstance(block.mlp, MLP)
        assert torch.equal(block.mlp.down_proj.weight, down[:, kept])
    assert generate(model, sample_ids(8, 1), 3).shape == (1, 11)


@pytest.mark.parametrize("calibrated", [False, True], ids=["weights", "contributions"])
def test_structured_pruning_of_dead_channels_changes_nothing(calibrated: bool) -> None:
    model = tiny_model()
    with torch.no_grad():
        for block in model.layers:
            mlp = block.mlp
            assert isinstance(mlp, MLP)
            mlp.gate_proj.weight[::4] = 0  # 24 of 96 channels contribute nothing
            mlp.up_proj.weight[::4] = 0
            mlp.down_proj.weight[:, ::4] = 0
    ids = sample_ids()
    with torch.inference_mode():
        reference = model(ids)
        prune_structured(model, 0.25, sample_ids(64, 1) if calibrated else None)
        torch.testing.assert_close(model(ids), reference, atol=1e-5, rtol=1e-5)


def test_pruning_amount_is_checked() -> None:
    with pytest.raises(ValueError, match=r"pruning amount must be in \[0, 1\), got 1.0"):
        prune_magnitude(tiny_model(), 1.0)


# -- perplexity and the gate ------------------------------------------------------------


def test_a_uniform_model_has_the_vocabulary_as_perplexity() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: all logits 0, every token equally likely
    value = ppl.perplexity(model, list(range(200)), context_length=CFG.context_length)
    assert value == pytest.approx(CFG.vocab_size, rel=1e-5)  # float32 losses


@given(length=st.integers(2, 300), window=st.integers(2, 80), stride_fraction=st.floats(0.01, 1.0))
def test_windows_score_every_target_once(length: int, window: int, stride_fraction: float) -> None:
    stride = max(1, min(window - 1, int(window * stride_fraction)))
    scored: list[int] = []
    for start, end, first in ppl.windows(length, window, stride):
        assert end - start <= window
        assert start < first < end or (start < first and first == end)
        scored.extend(range(first, end))
    assert scored == list(range(1, length))


def test_sliding_windows_match_one_pass_when_the_context_holds_all() -> None:
    model = tiny_model()
    ids = sample_ids(60, 1)[0].tolist()
    with torch.inference_mode():
        logits = model(torch.tensor([ids]))[0]
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    direct = math.exp(float(nll))
    assert ppl.perplexity(model, ids, context_length=64) == pytest.approx(direct, rel=1e-5)
    # Shorter windows see less context: a different, still finite figure.
    assert math.isfinite(ppl.perplexity(model, ids, context_length=16, stride=4))


def test_gate_arithmetic_and_message() -> None:
    assert ppl.perplexity_gate(12.1, 12.6, 0.05) is None
    assert ppl.perplexity_gate(12.1, 12.1 * 1.05, 0.05) is None  # the limit itself passes
    assert ppl.perplexity_gate(12.1, 11.0, 0.0) is None  # better is always fine
    assert (
        ppl.perplexity_gate(12.1, 13.0, 0.05)
        == "perplexity rose 7.4% (12.10 → 13.00) above maxPerplexityIncrease 5%"
    )
    assert ppl.perplexity_gate(10.0, 10.3, 0.025) == (
        "perplexity rose 3% (10.00 → 10.30) above maxPerplexityIncrease 2.5%"
    )
    message = ppl.perplexity_gate(10.0, float("inf"), 0.05)
    assert message is not None
    assert message.startswith("perplexity after compression is not finite")


def test_held_out_text_is_prose() -> None:
    text = ppl.held_out_text()
    paragraphs = text.split("\n\n")
    assert len(text) > 100_000
    assert not [p for p in paragraphs if p.startswith(" ") or "::=" in p[:40]]
    assert sum(p.count(". ") for p in paragraphs) > 1000  # sentences


def test_baseline_cache_prefers_the_model_dir_and_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir, cache_dir = tmp_path / "model", tmp_path / "cache"
    model_dir.mkdir()
    cache = ppl.BaselineCache(model_dir, cache_dir)
    assert cache.get("k") is None
    assert cache.put("k", 12.5, {"tokens": 10}) == model_dir / ppl.CACHE_FILE
    assert cache.get("k") == 12.5
    assert json.loads((model_dir / ppl.CACHE_FILE).read_text())["k"]["tokens"] == 10

    real_write = files.write_atomically

    def read_only_model_dir(path: str | Path, data: str | bytes) -> Path:
        if Path(path).parent == model_dir:  # as a volume mounted read-only
            raise PermissionError(13, "Read-only file system", str(path))
        return real_write(path, data)

    monkeypatch.setattr("lmworker.perplexity.write_atomically", read_only_model_dir)
    written = cache.put("other", 3.0, {})
    assert written is not None
    assert written.parent == cache_dir
    assert cache.get("other") == 3.0
    assert cache.get("k") == 12.5


def test_baseline_cache_gives_up_quietly_when_nothing_is_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where directories would have to be
    cache = ppl.BaselineCache(blocker / "model", blocker / "cache")
    assert cache.put("k", 1.0, {}) is None
    assert cache.get("k") is None


# -- the serving entry point ------------------------------------------------------------


def test_int8_is_measured_and_accepted_then_the_baseline_comes_from_the_cache(
    tmp_path: Path,
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    _, first = prepare_for_serving(
        tiny_model(),
        ByteTokenizer(),
        model_dir,
        CompressionSettings(
            quantization="int8", perplexity_tokens=256, max_perplexity_increase=0.5
        ),
        facts=EPYC,
    )
    assert first.refused is None
    assert first.precision == "fp32"
    assert "int8" in first.precision_reason
    assert first.perplexity_tokens == 256
    assert not first.baseline_cached
    assert first.perplexity_before is not None
    assert first.perplexity_after is not None
    assert (model_dir / ppl.CACHE_FILE).is_file()

    _, second = prepare_for_serving(
        tiny_model(),
        ByteTokenizer(),
        model_dir,
        CompressionSettings(
            quantization="int8", perplexity_tokens=256, max_perplexity_increase=0.5
        ),
        facts=EPYC,
    )
    assert second.baseline_cached
    assert second.perplexity_before == first.perplexity_before

    # Other weights, another token budget: each misses.
    _, other_weights = prepare_for_serving(
        tiny_model(seed=4),
        ByteTokenizer(),
        model_dir,
        CompressionSettings(precision="bf16", perplexity_tokens=256),
        facts=EPYC,
    )
    assert not other_weights.baseline_cached
    _, other_budget = prepare_for_serving(
        tiny_model(),
        ByteTokenizer(),
        model_dir,
        CompressionSettings(precision="bf16", perplexity_tokens=200),
        facts=EPYC,
    )
    assert not other_budget.baseline_cached
    assert other_budget.precision == "bf16"
    assert len(json.loads((model_dir / ppl.CACHE_FILE).read_text())) == 3


def test_a_rise_above_the_budget_is_refused_with_the_condition_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A random tiny model is near uniform whatever is pruned; script the two figures.
    figures = iter([12.1, 13.0])
    monkeypatch.setattr(ppl, "perplexity", lambda *_args, **_kwargs: next(figures))
    model, report = prepare_for_serving(
        tiny_model(),
        ByteTokenizer(),
        None,
        CompressionSettings(
            precision="fp32",
            pruning_method="Structured",
            pruning_amount=0.9,
            perplexity_tokens=128,
            cache_dir=str(tmp_path),
        ),
        facts=EPYC,
    )
    assert model.cfg.intermediate_size == 96 - round(0.9 * 96)
    assert report.pruning == "Structured pruning cut the MLP intermediate size from 96 to 10"
    assert (report.perplexity_before, report.perplexity_after) == (12.1, 13.0)
    assert report.refused == "perplexity rose 7.4% (12.10 → 13.00) above maxPerplexityIncrease 5%"


def test_nothing_to_compress_measures_nothing(tmp_path: Path) -> None:
    model = tiny_model()
    same, report = prepare_for_serving(
        model, ByteTokenizer(), tmp_path, CompressionSettings(precision="auto"), facts=OLD_X86
    )
    assert same is model
    assert report.precision == "fp32"
    assert report.precision_reason.startswith("auto chose fp32")
    assert report.perplexity_before is None
    assert report.refused is None
    assert not (tmp_path / ppl.CACHE_FILE).exists()


def test_settings_that_cannot_apply_are_errors() -> None:
    with pytest.raises(CompressionError, match="cannot be combined with precision bf16"):
        prepare_for_serving(
            tiny_model(),
            ByteTokenizer(),
            None,
            CompressionSettings(quantization="int8", precision="bf16"),
            facts=EPYC,
        )
    gpu = MachineFacts(device_type="cuda", cuda_capability=(9, 0))
    with pytest.raises(CompressionError, match="int8 quantization runs on CPU only"):
        prepare_for_serving(
            tiny_model(), ByteTokenizer(), None, CompressionSettings(quantization="int8"), facts=gpu
        )
    with pytest.raises(CompressionError, match="precision must be one of auto, fp32, bf16, fp16"):
        prepare_for_serving(
            tiny_model(), ByteTokenizer(), None, CompressionSettings(precision="fp8")
        )
    with pytest.raises(CompressionError, match="quantization must be one of none, int8"):
        prepare_for_serving(
            tiny_model(), ByteTokenizer(), None, CompressionSettings(quantization="int4")
        )
