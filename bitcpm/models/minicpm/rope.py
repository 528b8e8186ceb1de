"""LongRoPE: MiniCPM4's per-frequency rescaling of the rotary inverse frequencies."""

from __future__ import annotations

import torch

from bitcpm.config.model import RopeConfig


def longrope_factors(rope: RopeConfig, seq_length: int) -> list[float]:
    """Short factors while the training context fits the original window, long factors beyond it."""
    assert rope.original_max_position_embeddings is not None
    use_long = seq_length > rope.original_max_position_embeddings
    factors = rope.long_factor if use_long else rope.short_factor
    assert factors is not None
    return list(factors)


def apply_longrope(rotary: torch.nn.Module, rope: RopeConfig, seq_length: int) -> None:
    """Divide megatron's inv_freq elementwise by the LongRoPE factors (fp32, as the HF reference).

    Must run before the first forward: megatron caches rotary embeddings per sequence length.
    """
    factors = torch.tensor(longrope_factors(rope, seq_length), dtype=torch.float32)
    inv_freq = rotary.inv_freq.float()
    if factors.numel() != inv_freq.numel():
        raise ValueError(f"model.rope: {factors.numel()} LongRoPE factors for {inv_freq.numel()} frequencies")
    rotary.inv_freq = (inv_freq / factors.to(inv_freq.device)).to(rotary.inv_freq.dtype)
