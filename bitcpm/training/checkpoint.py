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
