"""Model shapes at another width with the same depth and head size (what muP transfer compares)."""

from __future__ import annotations

from bitcpm.config.model import ModelConfig


def parse_widths(text: str) -> list[int]:
    """'64,128,256' -> [64, 128, 256] (sorted, distinct, positive)."""
    try:
        widths = sorted({int(w) for w in text.split(",") if w.strip()})
    except ValueError:
        raise ValueError(f"{text}: expected comma-separated integers") from None
    if not widths or widths[0] <= 0:
        raise ValueError(f"{text}: expected positive integers")
    return widths


def width_overrides(base: ModelConfig, width: int, head_dim: int | None = None) -> list[str]:
    """Hydra overrides turning `base` into a model of hidden size `width`.

    Depth, head size, the query/key-value head ratio and the MLP ratio stay those of `base`; the
    intermediate size is rounded to a multiple of 8 (kernels and group sizes like it).
    """
    head_dim = head_dim or base.kv_channels
    if width % head_dim:
        raise ValueError(f"width {width}: not a multiple of the head size {head_dim}")
    heads = width // head_dim
    group = max(1, base.num_attention_heads // base.num_kv_heads)
    kv_heads = heads // group if heads % group == 0 and heads >= group else heads
    ffn = max(8, round(width * base.intermediate_size / base.hidden_size / 8) * 8)
    return [
        f"model.hidden_size={width}",
        f"model.intermediate_size={ffn}",
        f"model.num_attention_heads={heads}",
        f"model.num_kv_heads={kv_heads}",
        f"model.head_dim={head_dim}",
    ]
