"""Model geometry and MiniCPM's muP constants."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class RopeConfig:
    """Rotary position embedding: plain RoPE or MiniCPM4's LongRoPE."""

    type: str = "default"
    """'default' (plain RoPE) or 'longrope' (per-frequency rescaling, MiniCPM4 rope_scaling)."""
    theta: float = 10000.0
    """RoPE base (rope_theta)."""
    short_factor: list[float] | None = None
    """LongRoPE factors used while sequences fit in original_max_position_embeddings (head_dim/2 values)."""
    long_factor: list[float] | None = None
    """LongRoPE factors used for sequences longer than original_max_position_embeddings."""
    original_max_position_embeddings: int | None = None
    """Context length the short factors were fitted for."""


@dataclass
class ModelConfig:
    """A MiniCPM-architecture decoder: pre-norm RMSNorm, RoPE, GQA, SwiGLU, muP scalings."""

    name: str = MISSING
    """Preset name (0.5b, 1b, 3b, 8b, wt9m, ..., debug)."""
    source: str = ""
    """Where the numbers come from (config.json, paper table); UNCONFIRMED marks third-party readings."""
    architecture: str = "minicpm"
    """Key into bitcpm.models' registry."""
    hidden_size: int = MISSING
    """Model width d_m."""
    intermediate_size: int = MISSING
    """SwiGLU inner width."""
    num_layers: int = MISSING
    """Number of decoder layers L."""
    num_attention_heads: int = MISSING
    """Query heads."""
    num_kv_heads: int = MISSING
    """Key/value heads (GQA groups); equal to num_attention_heads for MHA."""
    head_dim: int | None = None
    """Per-head width; None means hidden_size / num_attention_heads."""
    vocab_size: int = MISSING
    """Vocabulary rows of the embedding (and LM head)."""
    max_position_embeddings: int = 4096
    """Longest context the RoPE tables are built for."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    tie_embeddings: bool = True
    """Share the input embedding with the LM head."""
    scale_emb: float = 12.0
    """muP: embedding output multiplier."""
    dim_model_base: int = 256
    """muP: base width; m = hidden_size / dim_model_base scales hidden init std, hidden lr and logits."""
    scale_depth: float = 1.4
    """muP: each residual branch is scaled by scale_depth / sqrt(num_layers)."""
    init_std: float = 0.1
    """muP: base init std (2-D hidden matrices use init_std / sqrt(m))."""
    parameterization: str = "mup"
    """'mup' (MiniCPM's width rules) or 'sp' (standard: no width or muP multipliers; README wind tunnel)."""
    rope: RopeConfig = field(default_factory=RopeConfig)
    """Rotary embedding settings."""

    @property
    def kv_channels(self) -> int:
        """Per-head width actually used."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    @property
    def width_mult(self) -> float:
        """muP width multiplier m = hidden_size / dim_model_base."""
        return self.hidden_size / self.dim_model_base
