"""A local copy of every logged metric (RUN_DIR/metrics.jsonl): readable without MLflow, and exact.

One JSON object per logging call: {"step": n, "timestamp_ms": t, "<metric>": value, ...}. With MLflow tracking the
tracker writes the file itself and sends MLflow its lines (bitcpm.tracking.spool.append_metrics is the one writer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from bitcpm.tracking.spool import append_metrics


class MetricsLog:
    """Appends one line per logging call, for runs whose tracker does not write metrics.jsonl itself."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, metrics: Mapping[str, float], step: int) -> None:
        """Record metrics of a step (written at once so a killed run keeps what it logged)."""
        append_metrics(self.path, metrics, step)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """All records of a metrics.jsonl file, in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def metric_series(path: Path, name: str) -> dict[int, float]:
    """step -> value of one metric (a later record of the same step wins, as after a resume)."""
    return {int(r["step"]): r[name] for r in read_metrics(path) if name in r}
