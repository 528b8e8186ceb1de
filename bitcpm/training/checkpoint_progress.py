"""Progress of a long checkpoint write: bytes on disk against bytes expected, from a watcher thread."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def bytes_under(path: Path) -> int:
    """Total size of the files under path (files may vanish while we look)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, name))
    return total


class WriteProgress:
    """Reports a checkpoint write that takes longer than `delay_s`: a bar on a terminal, lines in logs."""

    def __init__(self, path: Path, expected: int, what: str, delay_s: float = 3.0, every_s: float = 1.0, stream=None):
        self.path, self.expected, self.what = path, max(1, expected), what
        self.delay_s, self.every_s = delay_s, every_s
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.shown = False
        self._last_logged_tenth = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="checkpoint-progress", daemon=True)

    def start(self) -> None:
        """Begin watching (the first report only after delay_s)."""
        self.t0 = time.perf_counter()
        self._thread.start()

    def _watch(self) -> None:
        if self._stop.wait(self.delay_s):
            return
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.every_s)

    def poll(self) -> str:
        """Measure and report once; returns the line."""
        done = min(bytes_under(self.path), self.expected)
        frac = done / self.expected
        width = 24
        bar = "#" * int(width * frac) + "." * (width - int(width * frac))
        line = (
            f"bitcpm: writing {self.what} [{bar}] {human_bytes(done)} / {human_bytes(self.expected)} "
            f"({time.perf_counter() - self.t0:.0f} s)"
        )
        tenth = int(frac * 10)
        if self.tty:
            self.stream.write("\r" + line)
        elif tenth > self._last_logged_tenth:  # logs get a line per 10 %, not one per poll
            self.stream.write(line + "\n")
            self._last_logged_tenth = tenth
        self.stream.flush()
        self.shown = True
        return line

    def stop(self, ok: bool) -> None:
        """Stop watching; a write that was reported gets a closing line."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.shown:
            seconds = time.perf_counter() - self.t0
            end = f"written, {human_bytes(bytes_under(self.path))} in {seconds:.0f} s" if ok else "failed"
            self.stream.write(("\n" if self.tty else "") + f"bitcpm: {self.what} {end}\n")
            self.stream.flush()
