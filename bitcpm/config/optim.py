"""Optimizer and learning-rate schedule (AdamW with muP per-tensor lr, WSD)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OptimConfig:
    """AdamW with the warmup-stable-decay schedule of the MiniCPM paper."""

    lr: float = 1e-2
    """Base lr; 2-D hidden matrices get lr / m (m = hidden_size / dim_model_base)."""
    min_lr_ratio: float = 0.0
    """Floor of the decayed lr as a fraction of the peak (linear decay ends here)."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not norms)."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    eps: float = 1e-8
    """Adam epsilon."""
    clip_grad: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    warmup_steps: int = 10
    """Linear warmup steps."""
    decay_fraction: float = 0.1
    """Fraction of all steps spent in the decay phase (the paper finds ~10% sufficient)."""
    decay_style: str = "exponential"
    """'exponential' (halving every decay_half_life of the decay phase) or 'linear'."""
    decay_half_life: float = 0.2
    """exponential decay: half-life as a fraction of the decay phase."""
