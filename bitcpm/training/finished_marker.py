"""RUN_DIR/FINISHED: written by the worker once a run's training ended; a study skips runs that have it.

The worker writes it and the front end reads it (bitcpm.frontend.members), so it lives here, below both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FINISHED_MARKER = "FINISHED"


def mark_finished(run_dir: Path, step: int, metrics: dict[str, float]) -> None:
    """Write RUN_DIR/FINISHED atomically, once per run (rank 0 only)."""
    if os.environ.get("RANK", "0") != "0":
        return
    tmp = run_dir / f".{FINISHED_MARKER}.tmp"
    tmp.write_text(json.dumps({"step": step, **metrics}) + "\n")
    tmp.replace(run_dir / FINISHED_MARKER)
