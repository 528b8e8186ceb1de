"""Deterministic fault injection for the run-safety tests: BITCPM_FAULT=<point>[@<step>].

Points: mid_step (after backward, before the update), shard_write (a shard file half written),
before_rename (all shards written, staging directory not yet renamed), before_marker (renamed, no
COMPLETE marker yet), during_prune (old checkpoint partly deleted), nan_loss (the step's loss becomes NaN).
A crash point kills the process with SIGKILL, like an OOM killer or a node failure would.
"""

from __future__ import annotations

import os
import signal

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
