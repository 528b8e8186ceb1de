"""torch.distributed and megatron parallel_state set-up for one worker process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    tp_rank: int
    dp_rank: int
    dp_size: int

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, tracks and writes shared files."""
        return self.rank == 0


def init_distributed(
    backend: ModuleType, dist_backend: str, tp: int, pp: int, cp: int, seed: int, virtual_pp: int = 1
) -> DistInfo:
    """Join the process group (env:// under torchrun/Slurm, an in-memory store when alone)."""
    from megatron.core import parallel_state, tensor_parallel

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = backend.device(local_rank)
    if not dist.is_initialized():
        if world == 1 and "MASTER_ADDR" not in os.environ:
            dist.init_process_group(dist_backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(dist_backend, rank=rank, world_size=world)
    backend.after_process_group()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=virtual_pp if pp > 1 and virtual_pp > 1 else None,
        context_parallel_size=cp,
    )
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    torch.manual_seed(seed)
    return DistInfo(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        device=device,
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        dp_size=parallel_state.get_data_parallel_world_size(),
    )


def shutdown_distributed() -> None:
    """Leave the process group so a later run in the same process starts clean."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
