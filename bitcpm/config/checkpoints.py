"""Finding a complete checkpoint from its files alone (no torch): what preflight and the planner read."""

from __future__ import annotations

from pathlib import Path

from bitcpm.config.errors import ConfigError

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


def complete_step_checkpoint(init_from: str, step: int, key: str) -> Path:
    """stage.init_from's complete checkpoint of `step` (`key` names the setting that asks for it); ConfigError, one
    line listing the complete ones there, when it is missing or unfinished."""
    checkpoint = step_checkpoint(Path(init_from), step)
    if not (checkpoint / COMPLETE).is_file():
        kept = sorted(p.name for p in (Path(init_from) / "checkpoints").glob("step_*") if (p / COMPLETE).is_file())
        raise ConfigError(
            f"stage.init_from={init_from}: no complete checkpoint of step {step} ({key}) there "
            f"(complete: {', '.join(kept) or 'none'}; save it with train.save_interval and train.keep_checkpoints)"
        )
    return checkpoint
