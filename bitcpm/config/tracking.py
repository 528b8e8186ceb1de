"""Experiment tracking (MLflow)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    backend: str = "mlflow"
    """'mlflow' or 'none'."""
    uri: str | None = None
    """MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory."""
    experiment: str | None = None
    """MLflow experiment name; None: $MLFLOW_EXPERIMENT_NAME, else 'bitcpm'."""
    run_name: str | None = None
    """MLflow run name; None derives one from model, quant and stage."""
    log_interval: int = 10
    """Optimizer steps between metric logs."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra tags on every run."""
