"""Deterministic fault injection for the run-safety tests: BITCPM_FAULT=<point>[@<step>].

Points: mid_step (after backward, before the update), shard_write (the shard files written, the
checkpoint's metadata.json not yet), before_rename (everything written, staging directory not yet
renamed), before_marker (renamed, no COMPLETE marker yet), during_prune (old checkpoint partly deleted),
nan_loss (the step's loss becomes NaN), fill_disk (after the free-space check of a checkpoint write, a
ballast file fills the filesystem, as a concurrent writer would: the write itself hits ENOSPC).
A crash point kills the process with SIGKILL, like an OOM killer or a node failure would.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_ENV = "BITCPM_FAULT"


def _armed(point: str, step: int | None) -> bool:
    spec = os.environ.get(_ENV)
    if not spec:
        return False
    name, _, at = spec.partition("@")
    return name == point and (not at or step is None or int(at) == step)


def crash_point(point: str, step: int | None = None) -> None:
    """SIGKILL this process if BITCPM_FAULT names this point (and step)."""
    if _armed(point, step):
        os.kill(os.getpid(), signal.SIGKILL)


def nan_injected(step: int) -> bool:
    """True when the test asks for a NaN loss at this step."""
    return _armed("nan_loss", step)


BALLAST = "fill_disk.ballast"


def fill_disk_point(directory: Path, step: int) -> None:
    """Fill directory's filesystem with a ballast file (left in place: the test frees it)."""
    if not _armed("fill_disk", step):
        return
    fd = os.open(directory / BALLAST, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 12, 1):  # big blocks, then the remainder
            block = b"\0" * size
            try:
                while os.write(fd, block) > 0:
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
