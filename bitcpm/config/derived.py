"""Quantities derived from a job's config, torch-free, for the plan, the front end and the rules; the parallel
sizes come from bitcpm.config.parallel.derive_layout, which the engine builds with, at the launcher's world size.
"""

from __future__ import annotations

from bitcpm.config.parallel import ParallelLayout, derive_layout
from bitcpm.config.root import JobConfig


def base_lr(cfg: JobConfig) -> float:
    """The stage's peak lr before muP's per-tensor scaling: stage.lr (qat, distill), else optim.lr."""
    return cfg.stage.lr if cfg.stage.lr is not None else cfg.optim.lr


def world_size(cfg: JobConfig) -> int:
    """Worker processes the launcher will start."""
    return cfg.launcher.world_size(cfg.parallel.model_parallel_size)


def procs_per_node(cfg: JobConfig) -> int:
    """Ranks on each node."""
    return world_size(cfg) // cfg.launcher.nodes


def layout(cfg: JobConfig) -> ParallelLayout:
    """dp, micro-batches per step and the distributed-optimizer switch at the launcher's world size."""
    return derive_layout(cfg.parallel, world_size(cfg))


def data_parallel_size(cfg: JobConfig) -> int:
    """Data-parallel replicas: world size over tp x pp x cp."""
    return layout(cfg).dp


def micro_batches_per_step(cfg: JobConfig) -> int:
    """Micro-batches each data-parallel rank runs per optimizer step (gradient accumulation, pipeline depth)."""
    return layout(cfg).micro_batches_per_step


def tokens_per_step(cfg: JobConfig) -> int:
    """Tokens one optimizer step trains on, over all data-parallel ranks."""
    return cfg.parallel.global_batch_size * cfg.train.seq_length


def distributed_optimizer(cfg: JobConfig) -> bool:
    """parallel.distributed_optimizer resolved: null means on where dp > 1."""
    return layout(cfg).distributed_optimizer


def grad_reduce_in_fp32(cfg: JobConfig) -> bool:
    """megatron DDP keeps (and all-reduces) main_grad in fp32 for bf16/fp16 models, as Megatron-LM does for bf16.

    Megatron-LM's `--bf16` turns on `--accumulate-allreduce-grads-in-fp32`; gradients summed over many
    micro-batches and ranks in bf16 lose the small contributions late in the decay.
    """
    return cfg.hardware.dtype in ("bfloat16", "float16")


def pipeline_bubble(cfg: JobConfig) -> float:
    """Idle fraction of the 1F1B / interleaved schedule relative to compute: (pp - 1) / (m * virtual_pp)."""
    p = cfg.parallel
    if p.pp == 1:
        return 0.0
    return (p.pp - 1) / (micro_batches_per_step(cfg) * p.virtual_pp)
