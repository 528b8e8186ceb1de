"""Stage-specific wiring: run length (qat tokens=auto), lr re-warmup, the starting weights, a branch's start."""

from __future__ import annotations

from pathlib import Path

from bitcpm.config.checkpoints import complete_checkpoint, complete_step_checkpoint
from bitcpm.config.derived import base_lr
from bitcpm.config.errors import ConfigError
from bitcpm.config.root import JobConfig
from bitcpm.config.stage_length import stage_length
from bitcpm.training.schedule import WSDSchedule


def resolve_checkpoint(path: str, key: str) -> Path:
    """A checkpoint directory, or the newest complete checkpoint of a run directory."""
    checkpoint = complete_checkpoint(Path(path))
    if checkpoint is None:
        raise ConfigError(f"{key}={path}: no complete checkpoint there")
    return checkpoint


def total_steps(job: JobConfig) -> int:
    """Optimizer steps of this stage, as the plan derived them (config.stage_length is the one definition)."""
    length = stage_length(job)
    if not length.known:
        # At training time the source run must exist: never fall back to train.steps silently.
        resolve_checkpoint(str(job.stage.init_from), "stage.init_from")
        raise ConfigError(f"stage.tokens=auto: the source run {job.stage.init_from} has no config.yaml beside it")
    return length.steps


def stage_schedule(job: JobConfig) -> tuple[WSDSchedule, float]:
    """The stage's WSD schedule and base lr (qat/distill re-warm up from their own base lr)."""
    warmup = job.optim.warmup_steps if job.stage.name == "pretrain" else job.stage.rewarmup_steps
    return WSDSchedule.from_config(total_steps(job), warmup, job.optim), base_lr(job)


def initial_weights_from(job: JobConfig) -> Path | None:
    """Checkpoint whose model weights start this stage (None: random init)."""
    if not job.stage.init_from:
        return None
    if job.stage.init_step is not None:
        return complete_step_checkpoint(job.stage.init_from, job.stage.init_step, "stage.init_step")
    return resolve_checkpoint(job.stage.init_from, "stage.init_from")


def data_start_step(job: JobConfig) -> int:
    """The source run's step whose data this run reads on from (stage.init_step), 0 for a run of its own stream."""
    return job.stage.init_step or 0


def branch_checkpoint(job: JobConfig) -> Path | None:
    """The checkpoint a decay branch continues from (stage.branch_step of stage.init_from), None for other runs."""
    if job.stage.branch_step is None:
        return None
    return complete_step_checkpoint(str(job.stage.init_from), job.stage.branch_step, "stage.branch_step")
