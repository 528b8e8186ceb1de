"""The acceptance scripts' steps: a bitcpm command in a fresh Python, its output, a stop with its tail if it fails."""

from __future__ import annotations

import subprocess
import sys
import time


def run_step(who: str, *cmd: str) -> str:
    """`python -m CMD...`'s stdout; exits (naming `who` and the command, with the output's tail) when it fails."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = proc.stdout[-3000:] + proc.stderr[-3000:]
        sys.exit(f"{who}: {' '.join(cmd[:3])} failed (exit {proc.returncode}):\n{tail}")
    print(f"{who}: {' '.join(cmd[:3])}: {time.time() - t0:.0f} s", flush=True)
    return proc.stdout
