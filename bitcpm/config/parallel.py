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
    virtual_pp: int = 1
    """Virtual (interleaved) pipeline stages per pipeline rank; 1 = plain 1F1B."""
    distributed_optimizer: bool | None = None
    """Shard fp32 main weights and Adam state over data-parallel ranks; null = on where dp > 1."""
    overlap_grad_reduce: bool = True
    """Overlap the bucketed data-parallel gradient reduction with the backward pass."""
    overlap_param_gather: bool = False
    """Distributed optimizer: overlap the parameter all-gather with the next forward pass."""
    bucket_size_mb: float = 40.0
    """Size of one gradient-reduction bucket in MiB (megatron DDP bucket_size)."""

    @property
    def model_parallel_size(self) -> int:
        """Devices one model replica spans."""
        return self.tp * self.pp * self.cp


@dataclass(frozen=True)
class ParallelLayout:
    """The derived sizes of one run, computed once from the config and the world size (bitcpm.config.parallel)."""

    world_size: int
    tp: int
    pp: int
    virtual_pp: int
    cp: int
    dp: int
    micro_batch_size: int
    global_batch_size: int
    micro_batches_per_step: int
    """Micro-batches each data-parallel rank runs per optimizer step (gradient accumulation / pipeline depth)."""
    distributed_optimizer: bool
    """parallel.distributed_optimizer resolved: null means on where dp > 1."""


def derive_layout(p: ParallelConfig, world_size: int) -> ParallelLayout:
    """dp, micro-batches per step and the distributed-optimizer switch for `world_size` processes."""
    dp = world_size // p.model_parallel_size
    dist_opt = (dp > 1) if p.distributed_optimizer is None else bool(p.distributed_optimizer)
    return ParallelLayout(
        world_size=world_size,
        tp=p.tp,
        pp=p.pp,
        virtual_pp=p.virtual_pp,
        cp=p.cp,
        dp=dp,
        micro_batch_size=p.micro_batch_size,
        global_batch_size=p.global_batch_size,
        micro_batches_per_step=p.global_batch_size // (p.micro_batch_size * max(1, dp)),
        distributed_optimizer=dist_opt,
    )
