"""Restart record of a run: RUN_DIR/launch/restarts.json, and BITCPM_RESTARTS in every rank's environment.

The worker reads the count (bitcpm/training/restarts.py) to log it; this module only writes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RESTARTS_FILE = "restarts.json"
RESTARTS_ENV = "BITCPM_RESTARTS"


def read_restarts(launch_dir: Path) -> dict:
    """The record: {'count': n, 'events': [...]} (empty when the run was never restarted)."""
    path = Path(launch_dir) / RESTARTS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"count": 0, "events": []}
    return {"count": int(data.get("count", 0)), "events": list(data.get("events", []))}


def record_restart(launch_dir: Path, job_id: str, reason: str) -> int:
    """Count one more restart of this run (atomically replaced file); returns the new count."""
    launch_dir = Path(launch_dir)
    launch_dir.mkdir(parents=True, exist_ok=True)
    record = read_restarts(launch_dir)
    record["count"] += 1
    record["events"].append({"job_id": job_id, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    tmp = launch_dir / f"{RESTARTS_FILE}.tmp.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, launch_dir / RESTARTS_FILE)
    return record["count"]
