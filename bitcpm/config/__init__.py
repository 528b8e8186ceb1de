"""Typed configuration: one dataclass module per concern; YAML files in conf/ are presets of these."""

from bitcpm.config.data import DataConfig, DataSourceConfig
from bitcpm.config.hardware import HardwareConfig
from bitcpm.config.launcher import LauncherConfig
from bitcpm.config.model import ModelConfig, RopeConfig
from bitcpm.config.optim import OptimConfig
from bitcpm.config.parallel import ParallelConfig
from bitcpm.config.quant import QuantConfig
from bitcpm.config.root import JobConfig, TrainConfig
from bitcpm.config.stage import StageConfig
from bitcpm.config.tracking import TrackingConfig

__all__ = [
    "DataConfig",
    "DataSourceConfig",
    "HardwareConfig",
    "JobConfig",
    "LauncherConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "QuantConfig",
    "RopeConfig",
    "StageConfig",
    "TrackingConfig",
    "TrainConfig",
]
