"""Run directories keyed by a hash of what changes the math, so re-running a command resumes it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bitcpm.config.root import JobConfig


def math_relevant(job: JobConfig) -> dict[str, Any]:
    """The parts of a job that change the trained weights (not tracking, launcher, cadences)."""
    data = asdict(job.data)
    data.pop("cache_dir")
    for source in data["sources"]:
        if source.get("megatron_prefix") is None:  # keys added later leave earlier run directories' hashes alone
            source.pop("megatron_prefix", None)
    stage = asdict(job.stage)
    for key in ("branch_step", "init_step"):  # likewise: runs that do not branch keep their directories
        if stage[key] is None:
            stage.pop(key)
    return {
        "model": asdict(job.model),
        "quant": asdict(job.quant),
        "stage": stage,
        "data": data,
        "optim": asdict(job.optim),
        "train": {k: getattr(job.train, k) for k in ("seq_length", "steps", "seed")},
        "batch": job.parallel.global_batch_size,
        "dtype": job.hardware.dtype,
    }


def config_hash(job: JobConfig) -> str:
    """Short stable hash of math_relevant(job)."""
    blob = json.dumps(math_relevant(job), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_dir_for(job: JobConfig) -> Path:
    """outputs/<model>-<stage>-<quant>-<hash>: readable, and identical for identical math."""
    name = f"{job.model.name}-{job.stage.name}-{job.quant.label}-{config_hash(job)}"
    return Path(job.train.output_root) / name
