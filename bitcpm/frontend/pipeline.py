"""Runs a pipeline recipe: every stage is composed and validated first, then launched in order.

A stage's overrides may name an earlier stage's run directory as @name (stage.init_from=@pretrain).
Run directories are keyed by config hashes, so they are known before anything runs, and rerunning the
recipe skips finished stages and resumes an interrupted one.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bitcpm.config.root import JobConfig
from bitcpm.config.validate import ConfigError, validate
from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.rundir import run_dir_for

_REF = re.compile(r"@([A-Za-z0-9_]+)")


@dataclass
class PipelineStage:
    """A composed stage, ready to launch."""

    name: str
    job: JobConfig
    overrides: list[str]
    run_dir: Path


def _substitute(override: str, run_dirs: dict[str, Path], stage: str) -> str:
    def repl(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref not in run_dirs:
            raise ConfigError(f"pipeline stage '{stage}': @{ref} does not name an earlier stage")
        return str(run_dirs[ref])

    key, sep, value = override.partition("=")
    return key + sep + _REF.sub(repl, value) if sep else override


def plan_pipeline(cmd: CommandLine, base: JobConfig) -> list[PipelineStage]:
    """Compose and validate every stage of base.pipeline (nothing runs)."""
    pipeline_id = _pipeline_id(cmd.overrides)
    run_dirs: dict[str, Path] = {}
    stages = []
    for spec in base.pipeline:
        if spec.name in run_dirs:
            raise ConfigError(f"pipeline: stage name '{spec.name}' is used twice")
        stage_overrides = [_substitute(o, run_dirs, spec.name) for o in spec.overrides]
        overrides = [
            *cmd.overrides,
            *stage_overrides,
            "pipeline=[]",
            f"+tracking.tags.pipeline={pipeline_id}",
            f"+tracking.tags.pipeline_stage={spec.name}",
        ]
        try:
            job = compose_job(cmd, overrides, planned_runs=frozenset(run_dirs.values()))
        except ConfigError as exc:
            raise ConfigError(f"pipeline stage '{spec.name}': {exc}") from None
        run_dirs[spec.name] = run_dir_for(job)
        stages.append(PipelineStage(spec.name, job, overrides, run_dirs[spec.name]))
    return stages


def _pipeline_id(overrides: list[str]) -> str:
    """Names one invocation of a recipe: the recipe overrides' hash (same command, same id)."""
    return hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]


def run_pipeline(stages: list[PipelineStage], launch: Callable[[JobConfig, list[str]], int]) -> int:
    """Launch the stages in order; stop at the first that does not finish."""
    for i, stage in enumerate(stages, 1):
        print(f"bitcpm: pipeline stage {i}/{len(stages)} '{stage.name}' -> {stage.run_dir}", flush=True)
        try:
            # Rules that read an earlier stage's output (stage.tokens=auto vs stage.rewarmup_steps) hold only now.
            validate(stage.job)
        except ConfigError as exc:
            print(f"bitcpm: error: pipeline stage '{stage.name}': {exc}", file=sys.stderr)
            return 2
        code = launch(stage.job, stage.overrides)
        if code != 0:
            print(f"bitcpm: pipeline stopped: stage '{stage.name}' exited with {code}")
            return code
    return 0
