"""int8 quantization of a float32 `LlamaModel` for CPU serving, in place.

Three parts, each needed to keep SmolLM2-135M's perplexity within ~2 % (figures in
docs/serving.md, measured on 512 held-out tokens):

1. Per-token activation scales. PyTorch's dynamic int8 linear
   (`torch.ops.quantized.linear_dynamic`, FBGEMM/oneDNN int8 matmuls) quantises its whole
   input with one scale. Llama-family models put "massive activations" on a few tokens
   (the first one above all), so in a prompt of many tokens that one scale flattens
   every other token: +80 % perplexity with plain `quantize_dynamic`. `Int8Linear`
   divides each row (token) by its largest magnitude first and multiplies the output
   back (the layer is linear and bias-free), so each token gets its own scale, at the
   speed of the same kernel. A single row (batch-1 decoding) needs no rescaling.
2. SmoothQuant (Xiao et al., 2023): a few input channels carry outliers in every token.
   `smooth_activations` moves part of their range into the weights: per input channel
   j, s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) from one calibration pass; X is
   divided by s (folded into the RMSNorm before q/k/v and gate/up, into up_proj before
   down_proj, into v_proj before o_proj) and W multiplied by it. The float model
   computes the same function; its int8 version loses much less.
3. The full 8-bit activation range where the CPU has VNNI. FBGEMM quantises
   activations to 7 bits by default ("reduce_range") because AVX2's u8 x s8 multiply
   saturates a 16-bit sum; VNNI instructions accumulate in 32 bits, so the eighth bit is
   safe there and halves the rounding error.

Weights are int8 per output channel (symmetric). Embeddings stay float; a tied lm_head
gets its own int8 copy. Activations are float32, so an int8 model computes in fp32.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import torch
from torch import nn

from lmworker.model import MLP, Attention, DecoderLayer, LlamaModel

# /proc/cpuinfo flags of int8 dot products accumulating in 32 bits.
VNNI_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
SMOOTHQUANT_ALPHA = 0.6
# Rows whose largest magnitude is below this are left unscaled (all zeros, in practice).
_TINY = 1e-12


def reduce_range_needed(cpu_flags: frozenset[str], machine: str) -> bool:
    """Whether activations must be quantised to 7 bits: x86 without VNNI (see above)."""
    if machine.lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not cpu_flags.intersection(VNNI_CPU_FLAGS)


class Int8Linear(nn.Module):
    """A bias-free linear layer with int8 weights and per-token int8 activations."""

    in_features: int
    out_features: int
    reduce_range: bool

    def __init__(self, linear: nn.Linear, reduce_range: bool) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear supports bias-free layers only")
        weight = linear.weight.detach().to(device="cpu", dtype=torch.float32)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.reduce_range = reduce_range
        # Symmetric per output channel, as torch's per_channel_dynamic_qconfig does.
        scales = (weight.abs().amax(dim=1) / 127.5).clamp_min(1e-8).double()
        zero_points = torch.zeros(self.out_features, dtype=torch.int64)
        with warnings.catch_warnings():
            # torch 2.13 deprecates its quantized tensors for torchao, which has no fast
            # eager int8 CPU path yet (docs/serving.md); the worker extra pins torch < 2.15.
            warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
        self._packed: Any = torch.ops.quantized.linear_prepack(qweight, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] == 1:
            out = self._matmul(rows)
        else:
            scale = rows.abs().amax(dim=-1, keepdim=True).clamp_min(_TINY)
            out = self._matmul(rows / scale) * scale
        return out.reshape(*x.shape[:-1], self.out_features)

    def _matmul(self, rows: torch.Tensor) -> torch.Tensor:
        out = torch.ops.quantized.linear_dynamic(rows, self._packed, reduce_range=self.reduce_range)
        return cast(torch.Tensor, out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


@torch.no_grad()
def input_channel_maxima(
    model: LlamaModel, calibration_ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """max |input| per input channel of every linear layer, over one forward pass."""
    maxima: dict[str, torch.Tensor] = {}
    hooks = []

    def record(name: str) -> Any:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
            x = inputs[0].detach().float()
            seen = x.abs().reshape(-1, x.shape[-1]).amax(dim=0)
            maxima[name] = torch.maximum(maxima[name], seen) if name in maxima else seen

        return hook

    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(record(name)))
    was_training = model.training
    model.eval()
    try:
        model(calibration_ids)
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    return maxima


def smoothing_scales(
    activation_max: torch.Tensor, weights: list[torch.Tensor], alpha: float
) -> torch.Tensor:
    """SmoothQuant's s_j = max|X_j|^alpha / max|W_j|^(1-alpha) over the layers sharing X."""
    weight_max = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0)
    scales = activation_max.clamp_min(1e-5).pow(alpha) / weight_max.clamp_min(1e-5).pow(1 - alpha)
    return scales.clamp_min(1e-5)


@torch.no_grad()
def smooth_activations(
    model: LlamaModel, calibration_ids: torch.Tensor, alpha: float = SMOOTHQUANT_ALPHA
) -> None:
    """Rescale the float model's weights so its linear inputs have fewer outliers.

    The model computes the same function afterwards (up to float rounding).
    """
    maxima = input_channel_maxima(model, calibration_ids)
    for i, block in enumerate(model.layers):
        assert isinstance(block, DecoderLayer)
        attn, mlp = block.self_attn, block.mlp
        assert isinstance(attn, Attention)
        assert isinstance(mlp, MLP)
        prefix = f"layers.{i}."

        qkv = [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]
        scales = smoothing_scales(maxima[prefix + "self_attn.q_proj"], qkv, alpha)
        block.input_layernorm.weight.div_(scales)
        for weight in qkv:
            weight.mul_(scales)

        gate_up = [mlp.gate_proj.weight, mlp.up_proj.weight]
        scales = smoothing_scales(maxima[prefix + "mlp.gate_proj"], gate_up, alpha)
        block.post_attention_layernorm.weight.div_(scales)
        for weight in gate_up:
            weight.mul_(scales)

        # down_proj's input is silu(gate) * up: dividing up's rows divides that channel.
        scales = smoothing_scales(maxima[prefix + "mlp.down_proj"], [mlp.down_proj.weight], alpha)
        mlp.up_proj.weight.div_(scales[:, None])
        mlp.down_proj.weight.mul_(scales)

        _smooth_value_output(attn, maxima[prefix + "self_attn.o_proj"], alpha)


def _smooth_value_output(attn: Attention, activation_max: torch.Tensor, alpha: float) -> None:
    """o_proj's input channel (head h, dim d) is a mix of v_proj's (kv head h // group, d).

    Attention weights sum to one per query, so dividing a v_proj row divides that channel
    of every query head reading it: the scale is shared by the heads of a group.
    """
    group = attn.heads // attn.kv_heads
    shape = (attn.kv_heads, group, attn.head_dim)
    act = activation_max.view(shape).amax(dim=1)
    weight = attn.o_proj.weight.abs().amax(dim=0).view(shape).amax(dim=1)
    scales = (act.clamp_min(1e-5).pow(alpha) / weight.clamp_min(1e-5).pow(1 - alpha)).clamp_min(
        1e-5
    )
    attn.v_proj.weight.div_(scales.reshape(-1, 1))
    attn.o_proj.weight.mul_(scales[:, None, :].expand(shape).reshape(-1))


def replace_linears(model: nn.Module, reduce_range: bool) -> int:
    """Swap every nn.Linear below `model` for an Int8Linear; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child, reduce_range))
                replaced += 1
    return replaced


def quantize_int8(
    model: LlamaModel,
    calibration_ids: torch.Tensor | None,
    *,
    reduce_range: bool,
    alpha: float = SMOOTHQUANT_ALPHA,
) -> LlamaModel:
    """Smooth (when calibration ids [1, T] are given), then swap every linear for int8."""
    if model.embed_tokens.weight.dtype != torch.float32:
        raise ValueError("int8 quantization needs a float32 model")
    if model.embed_tokens.weight.device.type != "cpu":
        raise ValueError("int8 quantization runs on CPU only")
    if calibration_ids is not None:
        smooth_activations(model, calibration_ids, alpha)
    replace_linears(model, reduce_range)
    return model
