"""Graceful stop: a scheduler's warning signal ends the run at the next step boundary with a checkpoint.

Slurm sends --signal ahead of the time limit (submitit uses USR2), preemption sends TERM, and a local
Ctrl-C sends INT. The handler only sets a flag; the loop finishes its step, saves a complete checkpoint
and the worker exits with EXIT_PREEMPTED so the launcher can requeue and the rerun resumes.
"""

from __future__ import annotations

import signal
from types import FrameType

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later" — stopped cleanly, resumable


class StopRequest:
    """Records the first stop signal received."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self.signal_name is not None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    def install(self, names: list[str]) -> StopRequest:
        """Install the handler for the named signals (e.g. ['SIGTERM', 'SIGUSR2', 'SIGINT'])."""
        for name in names:
            signum = getattr(signal, name)
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        """Put the previous handlers back."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
