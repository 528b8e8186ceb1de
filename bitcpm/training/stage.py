"""Stage-specific wiring: run length (qat tokens=auto), lr re-warmup, and the starting weights."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import OmegaConf

from bitcpm.config.root import JobConfig
from bitcpm.config.validate import ConfigError, parse_tokens
from bitcpm.training import checkpoint as ckpt
from bitcpm.training.schedule import WSDSchedule


def resolve_checkpoint(path: str, key: str) -> Path:
    """A checkpoint directory, or the newest complete checkpoint of a run directory."""
    p = Path(path)
    if (p / ckpt.COMPLETE).exists():
        return p
    latest = ckpt.latest_checkpoint(p)
    if latest is None:
        raise ConfigError(f"{key}={path}: no complete checkpoint there")
    return latest


def _source_run_dir(checkpoint_dir: Path) -> Path:
    return checkpoint_dir.parent.parent


def source_decay_tokens(init_from: str) -> int:
    """Tokens the source run spent in its lr decay phase (from its saved config.yaml)."""
    run_dir = _source_run_dir(resolve_checkpoint(init_from, "stage.init_from"))
    config = run_dir / "config.yaml"
    if not config.exists():
        raise ConfigError(f"stage.tokens=auto: {config} not found (is stage.init_from a bitcpm run?)")
    src = OmegaConf.load(config)
    steps = int(src.train.steps)
    decay_steps = math.floor(float(src.optim.decay_fraction) * steps)
    return decay_steps * int(src.parallel.global_batch_size) * int(src.train.seq_length)


def total_steps(job: JobConfig) -> int:
    """Optimizer steps of this stage: from stage.tokens when given, else train.steps."""
    tokens = parse_tokens(job.stage.tokens)
    if tokens is None:
        return job.train.steps
    if tokens == "auto":
        # BitCPM4: QAT uses twice the tokens of the full-precision run's decay phase.
        assert job.stage.init_from is not None
        tokens = 2 * source_decay_tokens(job.stage.init_from)
    per_step = job.parallel.global_batch_size * job.train.seq_length
    return max(1, math.ceil(int(tokens) / per_step))


def stage_schedule(job: JobConfig) -> tuple[WSDSchedule, float]:
    """The stage's WSD schedule and base lr (qat/distill re-warm up from their own base lr)."""
    warmup = job.optim.warmup_steps if job.stage.name == "pretrain" else job.stage.rewarmup_steps
    base_lr = job.stage.lr if job.stage.lr is not None else job.optim.lr
    return WSDSchedule.from_config(total_steps(job), warmup, job.optim), base_lr


def initial_weights_from(job: JobConfig) -> Path | None:
    """Checkpoint whose model weights start this stage (None: random init)."""
    if not job.stage.init_from:
        return None
    return resolve_checkpoint(job.stage.init_from, "stage.init_from")
