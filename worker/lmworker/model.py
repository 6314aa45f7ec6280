"""A Llama-shaped decoder-only transformer with a KV cache, and sampling from it.

Two inference paths share the weights: `forward` with a `KVCache` (one length for the
whole batch: training, evaluation, `generate`) and `forward_packed` with a `SlotKVCache`
(independent sequences of different lengths in one pass: the server's continuous
batching). Training never touches the second.

Parameter names match Hugging Face's `LlamaModel` exactly (`embed_tokens`, `layers.{i}.
self_attn.q_proj`, ..., `norm`, `lm_head`), so exporting is a rename: a "model." prefix on
everything but `lm_head`. The arithmetic (RMSNorm in float32, rotate-half RoPE, SwiGLU)
follows `transformers`' Llama too, so an exported model gives the same logits there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from lmworker.config import ModelConfig
from lmworker.slot_cache import PackedBatch, SlotKVCache


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ValueError for a shape the model cannot be built with."""
    positive = {
        "vocab_size": cfg.vocab_size,
        "layers": cfg.layers,
        "hidden_size": cfg.hidden_size,
        "heads": cfg.heads,
        "kv_heads": cfg.kv_heads,
        "intermediate_size": cfg.intermediate_size,
        "context_length": cfg.context_length,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"model.{name} must be positive, got {value}")
    if cfg.hidden_size % cfg.heads:
        raise ValueError(
            f"model.hidden_size ({cfg.hidden_size}) must be a multiple of model.heads ({cfg.heads})"
        )
    if cfg.heads % cfg.kv_heads:
        raise ValueError(
            f"model.heads ({cfg.heads}) must be a multiple of model.kv_heads ({cfg.kv_heads})"
        )
    if (cfg.hidden_size // cfg.heads) % 2:
        raise ValueError(
            f"the head size hidden_size/heads ({cfg.hidden_size // cfg.heads}) must be even "
            "for rotary embeddings"
        )


class KVCache:
    """Keys and values of every layer for a batch, preallocated up to `max_length` positions.

    `length` counts the positions already stored; the model appends to it on each forward
    and advances it once all layers have written.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        batch_size: int,
        max_length: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        head_dim = cfg.hidden_size // cfg.heads
        shape = (batch_size, cfg.kv_heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.layers)]
        self.batch_size = batch_size
        self.max_length = max_length
        self.length = 0

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k/v ([B, kv_heads, T, D]) and return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions; {end} were needed")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def reset(self) -> None:
        self.length = 0


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalised in float32 even under autocast/half weights, as Llama does.
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.kv_heads = cfg.kv_heads
        self.head_dim = cfg.hidden_size // cfg.heads
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer: int,
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin

        start = 0
        if kv_cache is not None:
            start = kv_cache.length
            k, v = kv_cache.append(layer, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)  # the cache may be kept in another dtype
        if self.kv_heads != self.heads:
            # Each key/value head serves heads/kv_heads consecutive query heads (HF repeat_kv).
            group = self.heads // self.kv_heads
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)

        if start == 0:
            out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif t == 1:
            # One new token attends to everything cached, itself included.
            out = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            # SDPA's is_causal aligns the mask top-left; with a prefix cached the new
            # queries sit at positions start..start+t-1, so the mask is built explicitly.
            q_pos = torch.arange(start, start + t, device=x.device)
            k_pos = torch.arange(k.shape[2], device=x.device)
            mask = k_pos[None, :] <= q_pos[:, None]
            out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        projected: torch.Tensor = self.o_proj(out)
        return projected

    def forward_packed(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer: int,
        cache: SlotKVCache,
        batch: PackedBatch,
    ) -> torch.Tensor:
        """x: [N, hidden] tokens of several sequences (see PackedBatch); cos/sin [N, D]."""
        n = x.shape[0]
        q = self.q_proj(x).view(n, self.heads, self.head_dim)
        k = self.k_proj(x).view(n, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(n, self.kv_heads, self.head_dim)
        cos, sin = cos[:, None, :], sin[:, None, :]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        keys, values = cache.keys[layer], cache.values[layer]
        keys[batch.token_slots, :, batch.positions] = k.to(keys.dtype)
        values[batch.token_slots, :, batch.positions] = v.to(values.dtype)

        out = q.new_empty(n, self.heads, self.head_dim)
        if batch.decode_tokens.numel():
            span = batch.decode_span
            if batch.decode_slot_range is not None:  # a view: no copy of the cache
                first, end = batch.decode_slot_range
                dk, dv = keys[first:end, :, :span], values[first:end, :, :span]
            else:
                dk = keys[batch.decode_slots, :, :span]
                dv = values[batch.decode_slots, :, :span]
            dq = q[batch.decode_tokens][:, :, None, :]  # [D, heads, 1, head_dim]
            dk, dv = self._expand_kv(dk.to(q.dtype)), self._expand_kv(dv.to(q.dtype))
            attended = nn.functional.scaled_dot_product_attention(
                dq, dk, dv, attn_mask=batch.decode_mask
            )
            out[batch.decode_tokens] = attended[:, :, 0, :]
        for first, count, slot, past in batch.runs:
            rk = self._expand_kv(keys[slot : slot + 1, :, : past + count].to(q.dtype))
            rv = self._expand_kv(values[slot : slot + 1, :, : past + count].to(q.dtype))
            rq = q[first : first + count].transpose(0, 1)[None]  # [1, heads, count, head_dim]
            if past == 0:
                attended = nn.functional.scaled_dot_product_attention(rq, rk, rv, is_causal=True)
            else:
                q_pos = torch.arange(past, past + count, device=x.device)
                k_pos = torch.arange(past + count, device=x.device)
                mask = k_pos[None, :] <= q_pos[:, None]
                attended = nn.functional.scaled_dot_product_attention(rq, rk, rv, attn_mask=mask)
            out[first : first + count] = attended[0].transpose(0, 1)
        projected: torch.Tensor = self.o_proj(out.reshape(n, self.heads * self.head_dim))
        return projected

    def _expand_kv(self, t: torch.Tensor) -> torch.Tensor:
        """[B, kv_heads, L, D] -> [B, heads, L, D], as `forward` does (HF repeat_kv)."""
        if self.kv_heads == self.heads:
            return t
        return t.repeat_interleave(self.heads // self.kv_heads, dim=1)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = nn.functional.silu(self.gate_proj(x)) * self.up_proj(x)
        out: torch.Tensor = self.down_proj(gated)
        return out


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer: int,
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        attn: torch.Tensor = self.self_attn(self.input_layernorm(x), cos, sin, layer, kv_cache)
        x = x + attn
        mlp: torch.Tensor = self.mlp(self.post_attention_layernorm(x))
        return x + mlp

    def forward_packed(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer: int,
        cache: SlotKVCache,
        batch: PackedBatch,
    ) -> torch.Tensor:
        attn = self.self_attn.forward_packed(self.input_layernorm(x), cos, sin, layer, cache, batch)
        x = x + attn
        mlp: torch.Tensor = self.mlp(self.post_attention_layernorm(x))
        return x + mlp


class LlamaModel(nn.Module):
    """Token ids [B, T] to float logits [B, T, vocab]; see the module docstring for names."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        check_model_config(cfg)
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        head_dim = cfg.hidden_size // cfg.heads
        inv_freq = 1.0 / (
            cfg.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
        )
        # Not persistent: derived from the config, so it stays out of checkpoints.
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        init_weights(self, seed=0)

    def rotary(
        self, start: int, length: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, [1, 1, length, head_dim], for positions start..start+length-1."""
        positions = torch.arange(start, start + length, device=self.get_buffer("inv_freq").device)
        cos, sin = self.rotary_at(positions, dtype)
        return cos[None, None], sin[None, None]

    def rotary_at(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, [N, head_dim], for any positions [N]."""
        inv_freq = self.get_buffer("inv_freq")
        freqs = positions.float()[:, None] * inv_freq.float()[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        _, t = input_ids.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + t > self.cfg.context_length:
            raise ValueError(
                f"{start + t} positions exceed the context length {self.cfg.context_length}"
            )
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(start, t, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, i, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(t)
        logits: torch.Tensor = self.lm_head(self.norm(x))
        return logits.float()

    def forward_packed(
        self,
        input_ids: torch.Tensor,
        slots: Sequence[int],
        counts: Sequence[int],
        cache: SlotKVCache,
    ) -> torch.Tensor:
        """Extend several sequences at once: logits [S, vocab] of each one's last new token.

        `input_ids` [N] concatenates `counts[i]` new tokens for the sequence in `slots[i]`,
        which continue the `cache.lengths[slot]` positions cached there: a prompt (all its
        tokens, slot emptied first) or the latest token of a decoding sequence.
        """
        if input_ids.ndim != 1 or input_ids.shape[0] != sum(counts):
            raise ValueError(f"input_ids must be [sum(counts)] = [{sum(counts)}]")
        needed = max(cache.lengths[s] + c for s, c in zip(slots, counts, strict=True))
        if needed > self.cfg.context_length:
            raise ValueError(
                f"{needed} positions exceed the context length {self.cfg.context_length}"
            )
        cache.reserve(needed)
        batch = PackedBatch.build(slots, counts, cache, device=input_ids.device)
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary_at(batch.positions, x.dtype)
        for i, layer in enumerate(self.layers):
            x = cast(DecoderLayer, layer).forward_packed(x, cos, sin, i, cache, batch)
        for slot, count in zip(slots, counts, strict=True):
            cache.lengths[slot] += count
        logits: torch.Tensor = self.lm_head(self.norm(x[batch.last_tokens]))
        return logits.float()

    def new_slot_cache(self, slots: int, max_length: int | None = None) -> SlotKVCache:
        """A slot cache on this model's device and dtype (max_length defaults to the context)."""
        weight = self.embed_tokens.weight
        return SlotKVCache(
            self.cfg,
            slots,
            max_length if max_length is not None else self.cfg.context_length,
            dtype=weight.dtype,
            device=weight.device,
        )

    def new_kv_cache(self, batch_size: int, max_length: int | None = None) -> KVCache:
        """A cache on this model's device and dtype (max_length defaults to the context)."""
        weight = self.embed_tokens.weight
        return KVCache(
            self.cfg,
            batch_size,
            max_length if max_length is not None else self.cfg.context_length,
            dtype=weight.dtype,
            device=weight.device,
        )


@torch.no_grad()
def init_weights(model: LlamaModel, seed: int) -> None:
    """Deterministic init from `seed` alone: N(0, 0.02), residual outputs scaled (GPT-2).

    o_proj and down_proj write into the residual stream, 2 per layer, so their std is
    divided by sqrt(2 * layers) to keep the stream's variance independent of depth.
    """
    gen = torch.Generator().manual_seed(seed)
    residual_std = 0.02 / math.sqrt(2 * model.cfg.layers)
    for name, param in model.named_parameters():  # tied weights appear once
        if name.endswith("layernorm.weight") or name == "norm.weight":
            param.fill_(1.0)
            continue
        std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
        values = torch.empty(param.shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
        param.copy_(values)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters: a tied lm_head is counted once."""
    return sum(p.numel() for p in model.parameters())


def _sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: LlamaModel,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue each prompt row; returns [B, T + n] with n <= max_new_tokens.

    temperature 0 is greedy. Rows that produced `eos_id` are padded with it until every
    row has, when generation stops early. The prompt plus new tokens must fit the context.
    """
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be [batch, length] with length >= 1")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    batch, prompt_len = input_ids.shape
    total = prompt_len + max_new_tokens
    if total > model.cfg.context_length:
        raise ValueError(
            f"prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) exceeds the context "
            f"length {model.cfg.context_length}"
        )
    was_training = model.training
    model.eval()
    try:
        cache = model.new_kv_cache(batch, total)
        out = input_ids
        finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        logits = model(input_ids, cache)[:, -1]
        for step in range(max_new_tokens):
            next_ids = _sample_next(logits, temperature, top_k, generator)
            if eos_id is not None:
                next_ids = torch.where(finished, torch.full_like(next_ids, eos_id), next_ids)
                finished = finished | (next_ids == eos_id)
            out = torch.cat((out, next_ids[:, None]), dim=1)
            if (eos_id is not None and bool(finished.all())) or step == max_new_tokens - 1:
                break
            logits = model(next_ids[:, None], cache)[:, -1]
        return out
    finally:
        model.train(was_training)
