"""Atomic, layout-free checkpoints through megatron's dist_checkpointing (torch_dist format).

Every rank writes its shards into a staging directory; rank 0 renames it into place and then writes
the COMPLETE marker. A directory without the marker is never loaded, so a process killed at any point
leaves either the previous complete checkpoint or a new complete one to resume from. Model and
optimizer tensors are stored under global keys, so a checkpoint saved at one (tp, pp, dp, distributed
optimizer) layout resumes at another (see sharded_state).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from bitcpm.training.faults import crash_point
from bitcpm.training.fsync import fsync_path

COMPLETE = "COMPLETE"
_PREFIX = "step_"
FORMAT = 2  # 1: per-tp-rank torch files (shard_tpXX_ppYY.pt), read only through convert_checkpoint
CONVERT_COMMAND = "python -m bitcpm.training.convert_checkpoint"


class LegacyCheckpointError(ValueError):
    """A checkpoint in the format of older bitcpm versions, which must be converted once."""


def checkpoint_root(run_dir: Path) -> Path:
    """Where a run keeps its checkpoints."""
    return run_dir / "checkpoints"


def step_dir(run_dir: Path, step: int) -> Path:
    """Final directory of the checkpoint of `step`."""
    return checkpoint_root(run_dir) / f"{_PREFIX}{step:08d}"


def temporary_dir(run_dir: Path, step: int) -> Path:
    """Staging directory of the checkpoint of `step`."""
    return checkpoint_root(run_dir) / f".tmp_{_PREFIX}{step:08d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit() and (p / COMPLETE).exists()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest complete checkpoint, or None."""
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Staging directories and unmarked checkpoints left by a crash (ignored, reported)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not (p / COMPLETE).exists())


def discard(path: Path) -> None:
    """Remove an incomplete checkpoint directory."""
    shutil.rmtree(path, ignore_errors=True)


def is_legacy(ckpt_dir: Path) -> bool:
    """True for a checkpoint written by bitcpm before dist_checkpointing (per-tp-rank torch files)."""
    return any(ckpt_dir.glob("shard_tp*_pp*.pt"))


def check_not_legacy(ckpt_dir: Path) -> None:
    """Stop with the one command that converts an old-format checkpoint."""
    if is_legacy(ckpt_dir):
        raise LegacyCheckpointError(
            f"checkpoint {ckpt_dir} is in the old per-rank format of earlier bitcpm versions; "
            f"convert it once with: {CONVERT_COMMAND} {ckpt_dir}"
        )


def publish(run_dir: Path, step: int, keep_last: int) -> Path:
    """Rank 0, after every shard is written: rename into place, mark complete, prune old ones."""
    tmp, final = temporary_dir(run_dir, step), step_dir(run_dir, step)
    crash_point("before_rename", step)
    if final.exists():  # a re-save of the same step (e.g. after a crash between rename and marker)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(final.parent)
    crash_point("before_marker", step)
    marker = final / COMPLETE
    marker.write_text(f"{step}\n")
    fsync_path(marker)
    fsync_path(final)
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


# --- what the session calls (collectives: every rank, same arguments) ------------------------------


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_chunks: list[torch.nn.Module],
    optimizer: Any,
    extra_state: dict[str, Any],
    keep: int,
) -> Path | None:
    """Write a complete checkpoint of `step`; returns its directory on rank 0, None elsewhere.

    extra_state (rank 0's copy is kept) holds what the session needs back: step, data position,
    schedule state, tracker run id. Every rank's RNG states are saved here as well.
    """
    from bitcpm.training.checkpoint_write import write_staged

    write_staged(temporary_dir(run_dir, step), step, model_chunks, optimizer, extra_state)
    final = publish(run_dir, step, keep) if torch.distributed.get_rank() == 0 else None
    torch.distributed.barrier()
    return final


def load_checkpoint(ckpt_dir: Path, model_chunks: list[torch.nn.Module], optimizer: Any | None) -> dict[str, Any]:
    """Load model (and optimizer) state at this process's layout; returns the saved extra_state.

    RNG states come back only at the layout they were saved at (elsewhere there is no rank to match).
    """
    from bitcpm.training.checkpoint_read import read_into

    check_not_legacy(ckpt_dir)
    return read_into(ckpt_dir, model_chunks, optimizer, with_rng=True)


def load_model_weights(ckpt_dir: Path, model_chunks: list[torch.nn.Module]) -> dict[str, Any]:
    """Model weights only (stage.init_from, stage.teacher_from), at any layout; returns extra_state."""
    from bitcpm.training.checkpoint_read import read_into

    check_not_legacy(ckpt_dir)
    return read_into(ckpt_dir, model_chunks, None, with_rng=False)
