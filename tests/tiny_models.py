"""Tiny random models for serving tests, exported as a Hugging Face directory on demand."""

from __future__ import annotations

from pathlib import Path

import torch

from lmworker.config import ModelConfig
from lmworker.hf_export import export_hf_llama
from lmworker.model import LlamaModel, init_weights
from lmworker.tokenizer import ByteTokenizer

TINY = ModelConfig(
    vocab_size=257,
    layers=2,
    hidden_size=64,
    heads=4,
    kv_heads=2,
    intermediate_size=96,
    context_length=128,
)


@torch.no_grad()
def tiny_model(cfg: ModelConfig = TINY, seed: int = 1, sharpness: float = 20.0) -> LlamaModel:
    """Random weights scaled up, so the greedy choice wins by a clear margin at every step:
    comparisons of greedy outputs never hinge on a rounding difference between two ways of
    batching the same arithmetic."""
    model = LlamaModel(cfg)
    init_weights(model, seed)
    for param in model.parameters():
        if param.ndim == 2:
            param.mul_(sharpness)
    return model.eval()


def export_tiny(directory: Path, cfg: ModelConfig = TINY, seed: int = 1) -> Path:
    return export_hf_llama(tiny_model(cfg, seed), cfg, ByteTokenizer(), directory)
