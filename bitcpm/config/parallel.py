"""Parallel layout and batch arithmetic."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ParallelConfig:
    """How the model and the batch are split across devices; dp is derived from the world size."""

    tp: int = 1
    """Tensor-parallel size."""
    pp: int = 1
    """Pipeline-parallel size."""
    cp: int = 1
    """Context-parallel size."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (needs tp > 1 and a CUDA/NPU backend)."""
    micro_batch_size: int = 1
    """Sequences per micro-batch per data-parallel rank."""
    global_batch_size: int = 8
    """Sequences per optimizer step across all data-parallel ranks."""
    recompute: str = "none"
    """Activation recompute: 'none', 'selective' or 'full'."""

    @property
    def model_parallel_size(self) -> int:
        """Devices one model replica spans."""
        return self.tp * self.pp * self.cp
