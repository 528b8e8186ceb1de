"""A run directory as a finished bitcpm run leaves it, for tests of checks that read only its files.

Pre-launch checks read a checkpoint's COMPLETE marker, its MANIFEST.json where there is one (this run has
none: noted as unverifiable) and the run's config.yaml, never its weights, so config tests can name a source run
without training one.
"""

from __future__ import annotations

from pathlib import Path

from bitcpm.config.load import job_to_yaml
from bitcpm.frontend.compose import CommandLine, compose_job


def finished_run(run_dir: Path, overrides: list[str] | None = None, step: int = 4) -> Path:
    """Write config.yaml of the job composed from `overrides` and one checkpoint marked COMPLETE."""
    job = compose_job(CommandLine(), list(overrides or []), check_rules=False)
    checkpoint = run_dir / "checkpoints" / f"step_{step:08d}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text("")
    (run_dir / "config.yaml").write_text(job_to_yaml(job))
    return run_dir
