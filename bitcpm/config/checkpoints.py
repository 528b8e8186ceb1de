"""Finding a complete checkpoint from its files alone (no torch): what preflight and the planner read."""

from __future__ import annotations

from pathlib import Path

COMPLETE = "COMPLETE"  # the marker bitcpm.training.checkpoint writes last into a finished checkpoint


def complete_checkpoint(path: Path) -> Path | None:
    """The checkpoint a path names: itself when marked complete, else a run directory's newest complete one."""
    if (path / COMPLETE).is_file():
        return path
    root = path / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step_*") if (p / COMPLETE).is_file() and p.name[5:].isdigit()]
    return max(done, key=lambda p: int(p.name[5:]), default=None)


def step_checkpoint(run_dir: Path, step: int) -> Path:
    """Where run_dir keeps the checkpoint of `step` (complete or not, or absent)."""
    return run_dir / "checkpoints" / f"step_{step:08d}"
