"""Console progress of training steps: one updating line on a terminal, a line per interval in logs."""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Step counter with loss, lr, tokens/s and ETA."""

    def __init__(self, total_steps: int, start_step: int = 0, log_every: int = 10, stream=None) -> None:
        self.total = total_steps
        self.start_step = start_step
        self.log_every = log_every
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        """Report that `step` (0-based) finished."""
        done = step + 1
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.start_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * done / self.total)
        bar = "#" * filled + "." * (width - filled)
        line = (
            f"[{bar}] step {done}/{self.total} loss {loss:.4f} lr {lr:.2e} "
            f"{tokens_per_s:,.0f} tok/s ETA {_duration(eta)}"
        )
        if self.tty:
            self.stream.write("\r" + line)
            if done == self.total:
                self.stream.write("\n")
        elif done % self.log_every == 0 or done == self.total or done == self.start_step + 1:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        prefix = "\n" if self.tty else ""
        self.stream.write(prefix + text + "\n")
        self.stream.flush()
