"""Pruning a `LlamaModel` in place: Magnitude (unstructured) or Structured (MLP rows).

- Magnitude zeroes exactly round(amount x size) weights of smallest magnitude in every
  linear layer of the decoder blocks (the attention projections and the MLP). The
  output layer is left whole: it is usually tied to the token embeddings, so pruning it
  would prune the input too. Zeroed weights save nothing by themselves on CPU (dense
  matmuls); they pay only with a sparse kernel or a compressor downstream.
- Structured removes round(amount x intermediate_size) channels of every MLP's
  intermediate dimension: the rows of gate_proj and up_proj and the matching column of
  down_proj, so the MLP matmuls really shrink. The channels removed are those whose
  contribution to the layer's output has the smallest L2 norm on calibration text:
  ||down_proj[:, j]|| x RMS of the channel's activation h_j = silu(gate_j x) up_j x
  (the norm of h_j down_proj[:, j] over the tokens, up to a constant). Without
  calibration text, the L2 norm of the channel's weights (gate row, up row, down
  column) stands in. The weights alone mislead on real models: in SmolLM2-135M's first
  layer the most active channels have some of the smallest weights, and removing 10 %
  of channels by weight norm sent perplexity from 19 to 5,376, against 19.2 by
  contribution (docs/serving.md). Every layer loses the same number of channels, so
  the model keeps one `intermediate_size` (updated in `model.cfg`, which sizes nothing
  else: attention and the KV cache are untouched).

Neither retrains afterwards; the perplexity gate (`lmworker.perplexity`) says whether
what is left is still good enough.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lmworker.model import MLP, LlamaModel

PRUNING_METHODS = ("Magnitude", "Structured")


def check_amount(amount: float) -> None:
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")


def block_linears(model: LlamaModel) -> list[tuple[str, nn.Linear]]:
    """The decoder blocks' linear layers with their names (not lm_head)."""
    return [
        (f"layers.{name}", module)
        for name, module in model.layers.named_modules()
        if isinstance(module, nn.Linear)
    ]


@torch.no_grad()
def prune_magnitude(model: LlamaModel, amount: float) -> int:
    """Zero the round(amount x n) smallest-magnitude weights of each block linear layer.

    Returns how many weights were zeroed. Exactly that many per layer, ties included: the
    indices come from a sort, not from a threshold.
    """
    check_amount(amount)
    zeroed = 0
    for _, linear in block_linears(model):
        weight = linear.weight
        count = round(amount * weight.numel())
        if count == 0:
            continue
        flat = weight.view(-1)
        smallest = torch.topk(flat.abs().float(), count, largest=False, sorted=False).indices
        flat[smallest] = 0
        zeroed += count
    return zeroed


def mlp_channel_norms(mlp: MLP) -> torch.Tensor:
    """L2 norm of each intermediate channel's weights: gate row, up row, down column."""
    gate = mlp.gate_proj.weight.float()
    up = mlp.up_proj.weight.float()
    down = mlp.down_proj.weight.float()
    squared = gate.pow(2).sum(dim=1) + up.pow(2).sum(dim=1) + down.pow(2).sum(dim=0)
    return squared.sqrt()


@torch.no_grad()
def mlp_channel_activation_rms(
    model: LlamaModel, calibration_ids: torch.Tensor
) -> list[torch.Tensor]:
    """Per layer, the RMS over the calibration tokens of each intermediate channel."""
    rms: list[torch.Tensor] = []
    hooks = []

    def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        h = inputs[0].detach().float()
        rms.append(h.reshape(-1, h.shape[-1]).pow(2).mean(dim=0).sqrt())

    for block in model.layers:
        assert isinstance(block.mlp, MLP)
        hooks.append(block.mlp.down_proj.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        model(calibration_ids)
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    return rms


def mlp_channel_contributions(mlp: MLP, activation_rms: torch.Tensor) -> torch.Tensor:
    """||down_proj[:, j]|| x RMS(h_j): the L2 norm of channel j's share of the output."""
    down_norms: torch.Tensor = mlp.down_proj.weight.float().norm(dim=0)
    return down_norms * activation_rms


@torch.no_grad()
def prune_structured(
    model: LlamaModel, amount: float, calibration_ids: torch.Tensor | None = None
) -> int:
    """Drop the round(amount x intermediate_size) weakest MLP channels of every layer.

    Weakest by contribution on `calibration_ids` ([1, T]) when given, else by weight
    norm (see the module docstring). Returns the new intermediate size; the surviving
    channels keep their order.
    """
    check_amount(amount)
    old_size = model.cfg.intermediate_size
    keep = old_size - round(amount * old_size)
    if keep == old_size:
        return old_size
    if keep < 1:
        raise ValueError(f"pruning {amount} of {old_size} MLP channels would leave none")
    activation_rms = (
        mlp_channel_activation_rms(model, calibration_ids) if calibration_ids is not None else None
    )
    for i, block in enumerate(model.layers):
        mlp = block.mlp
        assert isinstance(mlp, MLP)
        scores = (
            mlp_channel_contributions(mlp, activation_rms[i])
            if activation_rms is not None
            else mlp_channel_norms(mlp)
        )
        kept = torch.topk(scores, keep).indices.sort().values
        mlp.gate_proj = _linear_from(mlp.gate_proj.weight[kept])
        mlp.up_proj = _linear_from(mlp.up_proj.weight[kept])
        mlp.down_proj = _linear_from(mlp.down_proj.weight[:, kept])
    model.cfg = dataclasses.replace(model.cfg, intermediate_size=keep)
    return keep


def _linear_from(weight: torch.Tensor) -> nn.Linear:
    """A bias-free nn.Linear holding `weight` ([out, in]), on its device and dtype."""
    out_features, in_features = weight.shape
    linear = nn.Linear(
        in_features, out_features, bias=False, device=weight.device, dtype=weight.dtype
    )
    linear.weight = nn.Parameter(weight.contiguous())
    return linear


def prune(
    model: LlamaModel, method: str, amount: float, calibration_ids: torch.Tensor | None = None
) -> str:
    """Apply `method` (Magnitude | Structured) at `amount`; returns what was done, in words.

    `calibration_ids` ([1, T]) rank Structured's channels by contribution; Magnitude
    ignores them.
    """
    if method == "Magnitude":
        zeroed = prune_magnitude(model, amount)
        return f"Magnitude pruning zeroed {zeroed} weights ({amount:.0%} of each block layer)"
    if method == "Structured":
        before = model.cfg.intermediate_size
        after = prune_structured(model, amount, calibration_ids)
        return f"Structured pruning cut the MLP intermediate size from {before} to {after}"
    raise ValueError(f"pruning method must be one of {', '.join(PRUNING_METHODS)}, got {method!r}")
