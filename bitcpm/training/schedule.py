"""Warmup-stable-decay learning-rate schedule (MiniCPM paper §4)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WSDSchedule:
    """lr multiplier per optimizer step: linear warmup, constant, then exponential or linear decay."""

    total_steps: int
    warmup_steps: int
    decay_steps: int
    style: str = "exponential"
    half_life: float = 0.2
    min_ratio: float = 0.0

    @classmethod
    def from_config(cls, total_steps: int, warmup_steps: int, optim) -> WSDSchedule:
        """Build from OptimConfig fields for a run of total_steps (warmup may be a stage re-warmup)."""
        return cls(
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            decay_steps=math.floor(optim.decay_fraction * total_steps),
            style=optim.decay_style,
            half_life=optim.decay_half_life,
            min_ratio=optim.min_lr_ratio,
        )

    @property
    def decay_start(self) -> int:
        """First step of the decay phase."""
        return self.total_steps - self.decay_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            # (step + 1) so the first update already moves the weights.
            return (step + 1) / self.warmup_steps
        if step < self.decay_start or self.decay_steps == 0:
            return 1.0
        t = (step - self.decay_start + 1) / self.decay_steps  # in (0, 1]
        if self.style == "linear":
            return 1.0 - t * (1.0 - self.min_ratio)
        # Exponential: the lr halves every half_life of the decay phase (MiniCPM's f = 0.5^(t/T)).
        return max(self.min_ratio, 0.5 ** (t / self.half_life))
