"""Writing one checkpoint into its staging directory: free-space check, progress, disk-full handling, manifest."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.dict_utils import nested_values
from megatron.core.dist_checkpointing.mapping import is_main_replica
from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
from megatron.core.dist_checkpointing.strategies.base import SaveShardedStrategy

from bitcpm.config.checkpoint_manifest import write_manifest
from bitcpm.training import sharded_state
from bitcpm.training.checkpoint_progress import WriteProgress, bytes_under, human_bytes
from bitcpm.training.faults import crash_point, fill_disk_point
from bitcpm.training.fsync import fsync_tree

# Room for metadata, the common file and filesystem blocks on top of the tensor bytes.
_SLACK_BYTES, _SLACK_FRACTION = 1 << 20, 0.02


class CheckpointDiskFullError(OSError):
    """The checkpoint did not fit on its filesystem; the previous complete checkpoint is untouched."""


class _ShardsThenFaultPoint(SaveShardedStrategy):
    """megatron's torch_dist writer, with the test hook between the shard files and metadata.json."""

    def __init__(self, inner: SaveShardedStrategy, step: int) -> None:
        super().__init__(inner.backend, inner.version)
        self.inner, self.step = inner, step

    @property
    def can_handle_sharded_objects(self) -> bool:
        return self.inner.can_handle_sharded_objects

    def save(self, sharded_state_dict, checkpoint_dir) -> None:
        self.inner.save(sharded_state_dict, checkpoint_dir)
        crash_point("shard_write", self.step)


def _results_queue_in_process() -> None:
    """Keep megatron's writer from starting a multiprocessing Manager (a server process) per trainer.

    FileSystemWriterAsync collects write results through `_get_write_results_queue()`, a spawn-context
    Manager queue meant for saves that finish in another process. Synchronous saves (ours) put and get in
    this process only, so a plain queue does; and a Manager server outlives a trainer that is SIGKILLed
    (OOM killer, node failure), keeping its stdout/stderr open, so whoever waits on them hangs.
    """
    import queue

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        filesystem_async._results_queue = queue.Queue()


def _local_bytes(state: dict[str, Any]) -> int:
    """Bytes this rank writes: the main replicas of its tensor shards."""
    total = 0
    for value in nested_values(state):
        data = getattr(value, "data", None)
        if isinstance(data, torch.Tensor) and is_main_replica(value.replica_id):
            total += data.numel() * data.element_size()
    return total


def _all_sum(value: int) -> int:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return int(t.item())


def _any(flag: bool) -> bool:
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC anywhere in the exception chain or message (torch's checkpoint writer wraps it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen) or "Disk quota exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _out_of_space(root: Path, tmp: Path, needed: int) -> bool:
    """Less room left than the rest of the checkpoint needs."""
    return shutil.disk_usage(root).free < needed - bytes_under(tmp)


def _disk_full(step: int, root: Path, needed: int) -> CheckpointDiskFullError:
    free = shutil.disk_usage(root).free
    return CheckpointDiskFullError(
        errno.ENOSPC,
        f"checkpoint of step {step} does not fit in {root}: it needs {human_bytes(needed)}, "
        f"{human_bytes(free)} free; the last complete checkpoint there is intact, free space and rerun to resume",
    )


def build_state(
    step: int, model_chunks: list[torch.nn.Module], optimizer: Any, extra_state: dict[str, Any]
) -> dict[str, Any]:
    """The sharded state dict of one checkpoint: model, optimizer tensors, RNG, and the common part."""
    state = sharded_state.model_state(model_chunks)
    adam_step = None
    if optimizer is not None:
        state["optimizer"], adam_step = sharded_state.optimizer_save_state(optimizer, state)
    state["rng"] = sharded_state.rng_object()
    state["bitcpm"] = {
        "format": 2,
        "step": step,
        "layout": sharded_state.layout(),
        "adam_step": adam_step,
        "extra_state": extra_state,
    }
    return state


def _without_rank_local(common: dict[str, Any]) -> dict[str, Any]:
    # extra_state may legitimately differ between ranks (the tracker's run id lives on rank 0 only).
    return {k: v for k, v in common.items() if k != "bitcpm"}


def write_staged(
    tmp: Path, step: int, model_chunks: list[torch.nn.Module], optimizer: Any, extra_state: dict[str, Any]
) -> None:
    """Every rank: write the checkpoint of `step` into the staging directory tmp (created afresh)."""
    sharded_state.prepare(model_chunks)
    _results_queue_in_process()
    rank0 = dist.get_rank() == 0
    if rank0:
        shutil.rmtree(tmp, ignore_errors=True)  # a staging directory left by a killed save
        tmp.mkdir(parents=True)
    dist.barrier()
    state = build_state(step, model_chunks, optimizer, extra_state)
    tensor_bytes = _all_sum(_local_bytes(state))
    needed = int(tensor_bytes * (1 + _SLACK_FRACTION)) + _SLACK_BYTES
    root = tmp.parent
    if _any(rank0 and shutil.disk_usage(root).free < needed):
        if rank0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_full(step, root, needed)
    if rank0:
        fill_disk_point(root, step)
    progress = WriteProgress(tmp, tensor_bytes, f"checkpoint step {step}") if rank0 else None
    failed: BaseException | None = None
    try:
        if progress:
            progress.start()
        strategy = _ShardsThenFaultPoint(get_default_save_sharded_strategy(), step)
        dist_checkpointing.save(
            state, str(tmp), sharded_strategy=strategy, preprocess_common_before_consistancy_check=_without_rank_local
        )
        fsync_tree(tmp)
    except Exception as exc:  # noqa: BLE001 - decided below, together with the other ranks
        failed = exc
    finally:
        if progress:
            progress.stop(ok=failed is None)
    # torch's zip writer reports ENOSPC as "unexpected pos ..." without an errno: the filesystem itself says.
    full = _any(failed is not None and (_is_disk_full(failed) or _out_of_space(root, tmp, needed)))
    if full:
        if rank0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_full(step, root, needed) from failed
    if failed is not None:
        raise failed
    dist.barrier()  # every rank's files are written and flushed: rank 0 can record them
    _record_manifest(tmp, step, root, needed, rank0)


def _record_manifest(tmp: Path, step: int, root: Path, needed: int, rank0: bool) -> None:
    """Rank 0 writes MANIFEST.json into the staging directory (before the rename and the marker); a failure
    there stops every rank, as a failed shard write does (no rank is left waiting for a publish that never comes)."""
    failed: OSError | None = None
    if rank0:
        try:
            write_manifest(tmp)
        except OSError as exc:
            failed = exc
    if not _any(failed is not None):
        return
    full = _any(failed is not None and _is_disk_full(failed))
    if rank0:
        shutil.rmtree(tmp, ignore_errors=True)
    if full:
        raise _disk_full(step, root, needed) from failed
    raise failed or OSError(f"checkpoint of step {step}: rank 0 could not write its manifest")
