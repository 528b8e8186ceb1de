"""Load a checkpoint written at one tensor-parallel size into a model built at another.

megatron marks every sharded parameter with `partition_dim` and `partition_stride`: a shard of a
strided parameter (the fused SwiGLU gate/up of linear_fc1, stride 2) holds `stride` interleaved pieces,
so the full tensor is rebuilt piece by piece, not by a plain concatenation. Adam's moments have the
parameter's shape and are resharded the same way, so model and optimizer both move between tp sizes.
"""

from __future__ import annotations

from typing import Any

import torch


def _partition(param: torch.nn.Parameter) -> tuple[int, int] | None:
    """(dim, stride) of a tensor-parallel parameter, None for replicated ones (norms)."""
    if not getattr(param, "tensor_model_parallel", False):
        return None
    return int(param.partition_dim), int(getattr(param, "partition_stride", 1))


def merge_shards(shards: list[torch.Tensor], dim: int, stride: int) -> torch.Tensor:
    """Full tensor from per-rank shards (rank order)."""
    pieces = [s.chunk(stride, dim=dim) for s in shards]
    return torch.cat([pieces[r][j] for j in range(stride) for r in range(len(shards))], dim=dim)


def split_full(full: torch.Tensor, dim: int, stride: int, tp: int, rank: int) -> torch.Tensor:
    """This rank's shard of a full tensor."""
    pieces = full.chunk(stride * tp, dim=dim)
    return torch.cat([pieces[j * tp + rank] for j in range(stride)], dim=dim).clone()


def reshard_tensor(shards: list[torch.Tensor], partition: tuple[int, int] | None, tp: int, rank: int) -> torch.Tensor:
    """The new rank's tensor from the old ranks' tensors."""
    if partition is None:
        return shards[0]
    dim, stride = partition
    return split_full(merge_shards(shards, dim, stride), dim, stride, tp, rank)


def reshard_model_state(
    model: torch.nn.Module, shard_states: list[dict[str, torch.Tensor]], tp: int, rank: int
) -> dict[str, Any]:
    """State dict for `model` (this rank of tp) built from the old ranks' model state dicts."""
    params = dict(model.named_parameters())
    out: dict[str, Any] = {}
    for key, value in shard_states[0].items():
        if not isinstance(value, torch.Tensor) or key not in params:
            out[key] = value  # buffers and megatron's _extra_state are not sharded
            continue
        out[key] = reshard_tensor([s[key] for s in shard_states], _partition(params[key]), tp, rank)
    return out


def reshard_optimizer_state(
    model: torch.nn.Module, shard_states: list[dict[str, Any]], tp: int, rank: int
) -> dict[str, Any]:
    """AdamW state for this rank: per-parameter moments resharded like their parameters.

    torch's optimizer state is keyed by parameter index in param-group order; the model structure (and
    so that order) does not depend on tp, so index i names the same parameter in every shard.
    """
    first = shard_states[0]
    names = [name for group in first["param_groups"] for name in group["names"]]
    params = dict(model.named_parameters())
    state: dict[int, dict[str, Any]] = {}
    for index, per_param in first["state"].items():
        partition = _partition(params[names[index]])
        state[index] = {
            k: reshard_tensor([s["state"][index][k] for s in shard_states], partition, tp, rank)
            if isinstance(v, torch.Tensor) and v.dim() > 0
            else v
            for k, v in per_param.items()
        }
    return {"state": state, "param_groups": first["param_groups"]}
