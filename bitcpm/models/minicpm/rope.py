"""LongRoPE as MiniCPM4's remote code (modeling_minicpm.py, MiniCPMLongRoPE) computes it.

Two parts: the inverse frequencies are divided elementwise by the short or the long factors, and cos/sin
are multiplied by sqrt(1 + ln(max / original) / ln(original)) (max = max_position_embeddings, original =
original_max_position_embeddings). The remote code builds its cos/sin table once for max_position_embeddings
tokens, so the long factors apply whenever max_position_embeddings exceeds the original window, whatever
the length of the sequence at hand. Scaling both q and k by f after the rotation multiplies every
attention logit by f^2, which megatron takes as its softmax scale (attention_softmax_scale).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bitcpm.config.model import RopeConfig

if TYPE_CHECKING:
    import torch


def uses_long_factors(rope: RopeConfig, max_position_embeddings: int, seq_length: int = 0) -> bool:
    """True when the remote code's cos/sin table is built from the long factors."""
    assert rope.original_max_position_embeddings is not None
    return max(max_position_embeddings, seq_length) > rope.original_max_position_embeddings


def longrope_factors(rope: RopeConfig, max_position_embeddings: int, seq_length: int = 0) -> list[float]:
    """The factors dividing the inverse frequencies: long beyond the original window, else short."""
    factors = rope.long_factor if uses_long_factors(rope, max_position_embeddings, seq_length) else rope.short_factor
    assert factors is not None
    return list(factors)


def longrope_mscale(rope: RopeConfig, max_position_embeddings: int) -> float:
    """The cos/sin multiplier sqrt(1 + ln(max/original) / ln(original)), exactly as the remote code (1 if equal).

    The remote code does not clamp: a window shorter than the original gives a factor below 1, kept here too.
    """
    original = rope.original_max_position_embeddings
    assert original is not None
    return math.sqrt(1.0 + math.log(max_position_embeddings / original) / math.log(original))


def attention_softmax_scale(rope: RopeConfig, max_position_embeddings: int, head_dim: int) -> float | None:
    """megatron softmax_scale carrying the LongRoPE cos/sin factor (f^2 / sqrt(d)); None for plain RoPE."""
    if rope.type != "longrope":
        return None
    return longrope_mscale(rope, max_position_embeddings) ** 2 / math.sqrt(head_dim)


def apply_longrope(rotary: torch.nn.Module, rope: RopeConfig, max_position_embeddings: int, seq_length: int) -> None:
    """Divide megatron's inv_freq elementwise by the LongRoPE factors (fp32, as the HF reference).

    Must run before the first forward: megatron caches rotary embeddings per sequence length.
    """
    import torch

    factors = torch.tensor(longrope_factors(rope, max_position_embeddings, seq_length), dtype=torch.float32)
    inv_freq = rotary.inv_freq.float()
    if factors.numel() != inv_freq.numel():
        raise ValueError(f"model.rope: {factors.numel()} LongRoPE factors for {inv_freq.numel()} frequencies")
    rotary.inv_freq = (inv_freq / factors.to(inv_freq.device)).to(rotary.inv_freq.dtype)
