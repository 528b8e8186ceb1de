"""Atomic, layout-free checkpoints through megatron's dist_checkpointing (torch_dist format).

Every rank writes its shards into a staging directory, where rank 0 then records every file's size and hash
in MANIFEST.json (checkpoint_write); rank 0 renames it into place and then writes the COMPLETE marker. A
directory without the marker is never loaded, so a process killed at any point leaves either the previous
complete checkpoint or a new complete one to resume from; a complete one whose files no longer match their
manifest is refused (or, on resume, skipped for the newest intact older one). Model and optimizer tensors are
stored under global keys, so a checkpoint saved at one (tp, pp, dp, distributed optimizer) layout resumes at
another (see sharded_state).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from bitcpm.config.checkpoint_manifest import DamagedCheckpointError, Verdict, accept, note_unverifiable, verify
from bitcpm.training.faults import crash_point
from bitcpm.training.fsync import fsync_path

COMPLETE = "COMPLETE"
_PREFIX = "step_"
DAMAGED_PREFIX = "damaged_"  # a damaged checkpoint moved aside on resume: kept to inspect, never loaded or pruned
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


def shared_verdict(ckpt_dir: Path) -> Verdict:
    """Rank 0 checks ckpt_dir against its manifest and every rank gets the verdict (one read of the files, not one
    per rank: they sit on a shared filesystem). Without a process group the caller checks alone."""
    import torch.distributed as dist

    spread = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    box: list[Verdict | None] = [verify(ckpt_dir) if not spread or dist.get_rank() == 0 else None]
    if spread:
        dist.broadcast_object_list(box, src=0)
    assert box[0] is not None
    return box[0]


def _is_main() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _say(line: str) -> None:
    if _is_main():
        print(line, flush=True)


def require_intact(ckpt_dir: Path, what: str) -> None:
    """Every rank: stop with one line when ckpt_dir is damaged; rank 0 notes once when it has no manifest."""
    accept(shared_verdict(ckpt_dir), what, _say)


def _move_aside(ckpt_dir: Path) -> Path:
    """Rename a damaged checkpoint out of the step_ names (kept for inspection; a later save rewrites the step)."""
    aside = ckpt_dir.with_name(DAMAGED_PREFIX + ckpt_dir.name)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(ckpt_dir, aside)
    fsync_path(aside.parent)
    return aside


def newest_intact_checkpoint(run_dir: Path) -> Path | None:
    """Every rank: the newest complete checkpoint that matches its manifest (None when there is none at all).

    Rank 0 checks newest first; a damaged one is reported in one warning and moved aside, so that pruning
    never keeps it in place of a good one. When every complete checkpoint is damaged the run stops instead
    of starting from scratch.
    """
    import torch.distributed as dist

    box: list[Any] = [None]
    if _is_main():
        try:
            box[0] = _choose_intact(run_dir)
        except OSError as exc:  # every rank must get an answer, or the others wait in the broadcast forever
            box[0] = f"cannot check the checkpoints in {checkpoint_root(run_dir)}: {exc}"
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], str):
        raise DamagedCheckpointError(box[0])
    return box[0]


def _choose_intact(run_dir: Path) -> Path | str | None:
    """Rank 0: the checkpoint to resume from, or the error line when every complete one is damaged."""
    done = complete_checkpoints(run_dir)
    verdicts: list[Verdict] = []
    for candidate in reversed(done):
        verdict = verify(candidate)
        if verdict.usable:
            for bad in verdicts:
                aside = _move_aside(bad.checkpoint)
                print(
                    f"bitcpm: warning: checkpoint {bad.checkpoint} is damaged: {bad.problem()}; "
                    f"moved aside to {aside.name}, resuming from {candidate.name}",
                    flush=True,
                )
            if verdict.state == "unverifiable" and not is_legacy(candidate):  # a legacy one stops with its own line
                note_unverifiable(candidate)
            return candidate
        verdicts.append(verdict)
    if not verdicts:
        return None
    newest = verdicts[0]
    return (
        f"every complete checkpoint in {checkpoint_root(run_dir)} is damaged; the newest, {newest.checkpoint.name}: "
        f"{newest.problem()}; not starting from scratch: restore the files, or delete the run directory to start over"
    )


def load_checkpoint(
    ckpt_dir: Path, model_chunks: list[torch.nn.Module], optimizer: Any | None, verified: bool = False
) -> dict[str, Any]:
    """Load model (and optimizer) state at this process's layout; returns the saved extra_state.

    RNG states come back only at the layout they were saved at (elsewhere there is no rank to match).
    verified=True: the caller already checked the files against the manifest (newest_intact_checkpoint).
    """
    from bitcpm.training.checkpoint_read import read_into

    check_not_legacy(ckpt_dir)
    if not verified:
        require_intact(ckpt_dir, "resume")
    return read_into(ckpt_dir, model_chunks, optimizer, with_rng=True)


def load_model_weights(
    ckpt_dir: Path, model_chunks: list[torch.nn.Module], what: str = "checkpoint", verified: bool = False
) -> dict[str, Any]:
    """Model weights only (stage.init_from, stage.teacher_from), at any layout; returns extra_state.

    `what` names the source in the one-line error of a damaged checkpoint; verified=True skips the check.
    """
    from bitcpm.training.checkpoint_read import read_into

    check_not_legacy(ckpt_dir)
    if not verified:
        require_intact(ckpt_dir, what)
    return read_into(ckpt_dir, model_chunks, None, with_rng=False)
