"""How often the launcher restarted this run (Slurm requeues after a time-limit or preemption warning).

The launcher writes the count into RUN_DIR/launch/restarts.json and exports it as BITCPM_RESTARTS to every rank
(launchers/restarts.py); this side only reads it, so the worker needs nothing from the launcher package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESTARTS_ENV = "BITCPM_RESTARTS"
RESTARTS_FILE = "launch/restarts.json"


def restart_count(run_dir: Path) -> int:
    """BITCPM_RESTARTS if the launcher set it, else the run directory's record, else 0."""
    value = os.environ.get(RESTARTS_ENV)
    if value is not None and value.strip().isdigit():
        return int(value)
    try:
        return int(json.loads((Path(run_dir) / RESTARTS_FILE).read_text()).get("count", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def log_restarts(tracker: Any, run_dir: Path, step: int) -> int:
    """Record the count on the tracking run: tag `restarts` (current value) and metric `restarts` at `step`."""
    count = restart_count(run_dir)
    tracker.set_tags({"restarts": str(count)})
    tracker.log_metrics({"restarts": float(count)}, step=step)
    return count
