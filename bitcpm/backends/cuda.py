"""CUDA backend (NCCL)."""

from __future__ import annotations

import torch


def transformer_config_overrides() -> dict:
    """TransformerConfig fields this backend needs (none: megatron's defaults are made for it)."""
    return {}


def prepare() -> None:
    """Fail early and clearly when no GPU is visible."""
    if not torch.cuda.is_available():
        raise RuntimeError("hardware.device=cuda but torch sees no CUDA device (check the node and torch build)")


def device(local_rank: int) -> torch.device:
    """One GPU per local rank."""
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def after_process_group() -> None:
    """TF32 for the fp32 parts (norm statistics, optimizer); matmuls run in bf16 anyway."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def synchronize() -> None:
    """Wait for the GPU so step times are real."""
    torch.cuda.synchronize()


def peak_memory_bytes() -> int | None:
    """Peak memory allocated by torch on this GPU."""
    return torch.cuda.max_memory_allocated()
