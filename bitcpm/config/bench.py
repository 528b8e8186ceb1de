"""Throughput benchmark settings (`python -m bitcpm.bench`): BF16 against QAT, same job, one process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BenchConfig:
    """How long and how often each variant is timed."""

    warmup_steps: int = 3
    """Optimizer steps run before timing each measurement (compilation, allocator and cache warm-up)."""
    timed_steps: int = 10
    """Optimizer steps timed per measurement."""
    repeats: int = 3
    """Measurements per variant, alternating BF16/QAT in ABBA order so slow drift cancels."""
    synthetic_data: bool = True
    """Random token batches (the work per step does not depend on token values); false reads the data."""
