"""Progress of long data jobs on stderr, without logging configured: one updating line on a terminal, else a
line at every tenth of the work (so a job log shows preparation advancing, and how fast)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

TTY_REFRESH_S = 0.25
"""Least time between redraws of the terminal line."""
LOG_STEPS = 10
"""Lines per job when stderr is not a terminal (one per tenth)."""


class DataProgress:
    """Counts done/total units of one job and prints where it stands."""

    def __init__(self, what: str, total: int, unit: str, stream: TextIO | None = None) -> None:
        self.what, self.total, self.unit = what, max(0, int(total)), unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.extra = ""
        self.t0 = time.perf_counter()
        self._last_draw = 0.0
        self._next_tenth = 1

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        extra = f", {self.extra}" if self.extra else ""
        return f"bitcpm data: {self.what}: {self.done:,}/{self.total:,} {self.unit}{share}{extra}, {elapsed:.1f} s"

    def update(self, advance: int, extra: str = "") -> None:
        """Add `advance` units (and replace the trailing detail, e.g. a token count)."""
        self.done = min(self.total, self.done + advance) if self.total else self.done + advance
        self.extra = extra or self.extra
        if self.tty:
            now = time.perf_counter()
            if now - self._last_draw >= TTY_REFRESH_S:
                self._last_draw = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
            return
        crossed = False
        while self.total and self._next_tenth <= LOG_STEPS and self.done * LOG_STEPS >= self._next_tenth * self.total:
            self._next_tenth += 1
            crossed = True
        if crossed and self.done < self.total:  # one line per update, however many tenths it crossed; 100% closes
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def close(self, summary: str = "") -> None:
        """Print the closing line (with a summary), ending the terminal line."""
        self.extra = summary or self.extra
        self.stream.write(("\r" if self.tty else "") + self._line() + " - done\n")
        self.stream.flush()


def say(message: str, stream: TextIO | None = None) -> None:
    """One plain progress message on stderr (a step that has no count)."""
    out = stream if stream is not None else sys.stderr
    out.write(f"bitcpm data: {message}\n")
    out.flush()
