"""Atomic checkpoints: write into a temporary directory, rename it, then write a completion marker.

A directory without the marker is never loaded, so a process killed at any point leaves either the
previous complete checkpoint or a new complete one to resume from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from bitcpm.training.faults import crash_point

COMPLETE = "COMPLETE"
_PREFIX = "step_"


def checkpoint_root(run_dir: Path) -> Path:
    """Where a run keeps its checkpoints."""
    return run_dir / "checkpoints"


def _step_dir(root: Path, step: int) -> Path:
    return root / f"{_PREFIX}{step:08d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / COMPLETE).exists()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest complete checkpoint, or None."""
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def shard_name(tp_rank: int, pp_rank: int = 0) -> str:
    """File of one model-parallel shard (data-parallel replicas hold identical shards)."""
    return f"shard_tp{tp_rank:02d}_pp{pp_rank:02d}.pt"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_shard(tmp_dir: Path, tp_rank: int, state: dict[str, Any]) -> None:
    """Write this rank's shard into the temporary directory (atomically per file)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    target = tmp_dir / shard_name(tp_rank)
    partial = target.with_suffix(".partial")
    torch.save(state, partial)
    crash_point("shard_write", state.get("step"))
    _fsync_file(partial)
    os.replace(partial, target)


def temporary_dir(run_dir: Path, step: int) -> Path:
    """Staging directory of the checkpoint of `step`."""
    return checkpoint_root(run_dir) / f".tmp_{_PREFIX}{step:08d}"


def publish(run_dir: Path, step: int, keep_last: int) -> Path:
    """Rank 0, after every shard is written: rename into place, mark complete, prune old ones."""
    root = checkpoint_root(run_dir)
    tmp, final = temporary_dir(run_dir, step), _step_dir(root, step)
    crash_point("before_rename", step)
    if final.exists():  # a re-save of the same step (e.g. after a crash between rename and marker)
        shutil.rmtree(final)
    os.replace(tmp, final)
    crash_point("before_marker", step)
    marker = final / COMPLETE
    marker.write_text(f"{step}\n")
    _fsync_file(marker)
    prune(run_dir, keep_last)
    return final


def prune(run_dir: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last complete checkpoints (the marker goes first)."""
    if keep_last <= 0:
        return
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        (old / COMPLETE).unlink(missing_ok=True)
        crash_point("during_prune")
        shutil.rmtree(old, ignore_errors=True)


def saved_tp(ckpt_dir: Path) -> int:
    """Tensor-parallel size a checkpoint was written with (one shard file per tp rank)."""
    return len(list(ckpt_dir.glob("shard_tp*_pp00.pt")))


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Staging directories and unmarked checkpoints left by a crash (ignored, reported)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not (p / COMPLETE).exists())


def discard(path: Path) -> None:
    """Remove an incomplete checkpoint directory."""
    shutil.rmtree(path, ignore_errors=True)


def read_shard(ckpt_dir: Path, tp_rank: int) -> dict[str, Any]:
    """Load this rank's shard of a complete checkpoint."""
    path = ckpt_dir / shard_name(tp_rank)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {ckpt_dir} has no shard for tp rank {tp_rank} (saved with another parallel.tp?)"
        )
    return torch.load(path, map_location="cpu", weights_only=False)


# --- what the session calls (every rank, same arguments) -------------------------------------------
# Interim format at a fixed layout: model shards per (tp, pp) as before (dp rank 0 writes them), plus one
# file per rank with megatron's optimizer state (the inner AdamW state and the fp32 main weights it owns).


def _optimizer_file(rank: int) -> str:
    return f"optim_rank{rank:05d}.pt"


def _raw(chunk: torch.nn.Module) -> torch.nn.Module:
    return getattr(chunk, "module", chunk)  # megatron DDP wraps the GPTModel as .module


def _main_params(optimizer: Any) -> list[torch.Tensor]:
    return [p for group in optimizer.optimizer.param_groups for p in group["params"]]


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_chunks: list[torch.nn.Module],
    optimizer: Any,
    extra_state: dict[str, Any],
    keep: int,
) -> Path | None:
    """Write a complete checkpoint of `step`; returns its directory on rank 0, None elsewhere."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    tmp = temporary_dir(run_dir, step)
    rank = dist.get_rank()
    if ps.get_data_parallel_rank() == 0:
        state = {"model": [_raw(c).state_dict() for c in model_chunks], **extra_state}
        state["model"] = state["model"][0] if len(model_chunks) == 1 else state["model"]
        tmp.mkdir(parents=True, exist_ok=True)
        target = tmp / shard_name(ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank())
        partial = target.with_suffix(".partial")
        torch.save(state, partial)
        crash_point("shard_write", step)
        _fsync_file(partial)
        os.replace(partial, target)
    tmp.mkdir(parents=True, exist_ok=True)
    opt = {"inner": optimizer.optimizer.state_dict(), "main": [p.detach() for p in _main_params(optimizer)]}
    torch.save({"optimizer": opt, "rng": torch.get_rng_state()}, tmp / _optimizer_file(rank))
    _fsync_file(tmp / _optimizer_file(rank))
    dist.barrier()
    final = publish(run_dir, step, keep_last=keep) if rank == 0 else None
    dist.barrier()
    return final


def load_model_weights(ckpt_dir: Path, model_chunks: list[torch.nn.Module]) -> dict[str, Any]:
    """Model weights only (stage.init_from, stage.teacher_from); resharded across tp at pp=1. Returns extra_state."""
    from megatron.core import parallel_state as ps

    from bitcpm.training.reshard import reshard_model_state

    tp, tp_rank, pp_rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank(), 0
    pp_rank = ps.get_pipeline_model_parallel_rank()
    saved = saved_tp(ckpt_dir)
    if saved == tp:
        state = torch.load(ckpt_dir / shard_name(tp_rank, pp_rank), map_location="cpu", weights_only=False)
        models = state["model"] if isinstance(state["model"], list) else [state["model"]]
    else:
        if len(model_chunks) != 1 or ps.get_pipeline_model_parallel_world_size() != 1:
            raise ValueError(f"checkpoint {ckpt_dir}: written at tp={saved}; changing tp needs pp=1 in this format")
        shards = [read_shard(ckpt_dir, r) for r in range(saved)]
        state = dict(shards[0])
        models = [reshard_model_state(_raw(model_chunks[0]), [s["model"] for s in shards], tp, tp_rank)]
    if len(models) != len(model_chunks):
        raise ValueError(f"checkpoint {ckpt_dir}: {len(models)} model chunks saved, {len(model_chunks)} built")
    for chunk, sd in zip(model_chunks, models, strict=True):
        _raw(chunk).load_state_dict(sd)
    return {k: v for k, v in state.items() if k != "model"}


def _resharded_optimizer(ckpt_dir: Path, optimizer: Any, saved: int, tp: int, tp_rank: int) -> dict[str, Any]:
    """The optimizer file of this tp rank rebuilt from a checkpoint written at tp=saved (pp=dp=1 both sides).

    The inner AdamW state is indexed in param-group order, which does not depend on tp; megatron copies the
    tensor-parallel attributes onto its fp32 main weights, so each moment is resharded like its weight.
    """
    from bitcpm.training.reshard import _partition, reshard_tensor

    shards = [torch.load(ckpt_dir / _optimizer_file(r), map_location="cpu", weights_only=False) for r in range(saved)]
    mains = _main_params(optimizer)
    opts = [sh["optimizer"] for sh in shards]
    main = [reshard_tensor([o["main"][i] for o in opts], _partition(p), tp, tp_rank) for i, p in enumerate(mains)]
    inner = opts[0]["inner"]
    state = {}
    for index, per_param in inner["state"].items():
        part = _partition(mains[index])
        state[index] = {
            k: reshard_tensor([o["inner"]["state"][index][k] for o in opts], part, tp, tp_rank)
            if isinstance(v, torch.Tensor) and v.dim() > 0
            else v
            for k, v in per_param.items()
        }
    return {"optimizer": {"inner": {"state": state, "param_groups": inner["param_groups"]}, "main": main}}


def load_checkpoint(ckpt_dir: Path, model_chunks: list[torch.nn.Module], optimizer: Any | None) -> dict[str, Any]:
    """Model and optimizer state (plus this rank's RNG at the saved layout); returns extra_state.

    Interim format: another tensor-parallel size is resharded at pp=1 and dp=1; other layout changes stop.
    """
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    extra = load_model_weights(ckpt_dir, model_chunks)
    tp, tp_rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
    saved_tp_size = saved_tp(ckpt_dir)
    same_layout = saved_tp_size == tp
    if not same_layout:
        if dist.get_world_size() != tp or len(list(ckpt_dir.glob("optim_rank*.pt"))) != saved_tp_size:
            raise ValueError(
                f"checkpoint {ckpt_dir}: written at tp={saved_tp_size} with pp or dp > 1; this checkpoint format "
                "resumes at another tp only with pp=1 and dp=1"
            )
        saved = _resharded_optimizer(ckpt_dir, optimizer, saved_tp_size, tp, tp_rank) if optimizer is not None else {}
    else:
        path = ckpt_dir / _optimizer_file(dist.get_rank())
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {ckpt_dir} was written at another parallel layout (no {path.name})")
        saved = torch.load(path, map_location="cpu", weights_only=False)
    if optimizer is not None:
        mains = _main_params(optimizer)
        if len(mains) != len(saved["optimizer"]["main"]):
            raise ValueError(f"checkpoint {ckpt_dir} was written at another parallel layout (optimizer shards differ)")
        with torch.no_grad():
            for p, v in zip(mains, saved["optimizer"]["main"], strict=True):
                p.copy_(v)
        optimizer.optimizer.load_state_dict(saved["optimizer"]["inner"])
    if same_layout:
        torch.set_rng_state(saved["rng"])
    return extra
