"""Tensor-parallel layout of one megatron parameter: its full tensor from per-rank shards and back.

megatron marks every sharded parameter with `partition_dim` and `partition_stride`: a shard of a
strided parameter (the fused SwiGLU gate/up of linear_fc1, stride 2) holds `stride` interleaved pieces,
so the full tensor is rebuilt piece by piece, not by a plain concatenation. Checkpoints reshard through
megatron's dist_checkpointing; these helpers serve the readers of foreign layouts (Hugging Face weights,
checkpoints of earlier bitcpm versions): models/ (the Hugging Face reader) and training/ (the legacy
converter) both use them, so they live at the lower of the two.
"""

from __future__ import annotations

import torch


def merge_shards(shards: list[torch.Tensor], dim: int, stride: int) -> torch.Tensor:
    """Full tensor from per-rank shards (rank order)."""
    pieces = [s.chunk(stride, dim=dim) for s in shards]
    return torch.cat([pieces[r][j] for j in range(stride) for r in range(len(shards))], dim=dim)


def split_full(full: torch.Tensor, dim: int, stride: int, tp: int, rank: int) -> torch.Tensor:
    """This rank's shard of a full tensor."""
    pieces = full.chunk(stride * tp, dim=dim)
    return torch.cat([pieces[j * tp + rank] for j in range(stride)], dim=dim).clone()
