"""The whole job: every group plus run-level settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from bitcpm.config.bench import BenchConfig
from bitcpm.config.data import DataConfig
from bitcpm.config.hardware import HardwareConfig
from bitcpm.config.launcher import LauncherConfig
from bitcpm.config.model import ModelConfig
from bitcpm.config.optim import OptimConfig
from bitcpm.config.parallel import ParallelConfig
from bitcpm.config.pipeline import PipelineStageConfig
from bitcpm.config.quant import QuantConfig
from bitcpm.config.stage import StageConfig
from bitcpm.config.tracking import TrackingConfig


@dataclass
class TrainConfig:
    """Run length, evaluation and checkpoint cadence."""

    seq_length: int = 256
    """Tokens per training sequence."""
    steps: int = 60
    """Optimizer steps (ignored when stage.tokens sets the length)."""
    seed: int = 1234
    """Seed of initialisation and dropout."""
    eval_interval: int = 30
    """Steps between validation passes; 0 disables periodic validation."""
    eval_batches: int = 8
    """Global batches per validation pass: the same held-out sequences at every parallel layout."""
    save_interval: int = 0
    """Steps between checkpoints; 0 saves only at the end."""
    output_root: str = "outputs"
    """Parent of run directories."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept per run (older ones are pruned)."""
    nan_policy: str = "skip"
    """On a NaN/inf loss or gradient: 'skip' the batch (up to max_nan_skips times) or 'stop' after saving."""
    max_nan_skips: int = 3
    """Skipped batches allowed per run before the run stops (policy 'skip')."""
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR2", "SIGINT"])
    """Signals that stop the run gracefully: finish the step, save a checkpoint, exit for requeue."""


@dataclass
class JobConfig:
    """Root of the composed configuration."""

    model: ModelConfig = MISSING
    parallel: ParallelConfig = MISSING
    quant: QuantConfig = MISSING
    stage: StageConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    tracking: TrackingConfig = MISSING
    launcher: LauncherConfig = MISSING
    hardware: HardwareConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    """Settings of `python -m bitcpm.bench` (ignored by training)."""
    pipeline: list[PipelineStageConfig] = field(default_factory=list)
    """Stages run in order (each a job of its own); empty for a single-stage job."""
    dry_run: bool = False
    """Print the plan and stop before building anything."""
    experiment_name: str | None = None
    """Name of a recipe from conf/experiment (set by the recipe itself)."""
    study: dict[str, Any] = field(default_factory=dict)
    """Free variables of a study (sweeps/): swept values that other keys interpolate, e.g. ${study.qat_fraction}."""
