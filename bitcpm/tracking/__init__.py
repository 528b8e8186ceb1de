"""Experiment tracking for bitcpm runs (MLflow or nothing); backends are imported only when opened."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bitcpm.tracking.base import RUN_STATUSES, NullTracker, Tracker
from bitcpm.tracking.run_info import default_tags, flatten_config, scrub_secrets
from bitcpm.tracking.store_uri import resolve_store_uri

__all__ = [
    "RUN_STATUSES",
    "NullTracker",
    "Tracker",
    "TrackingSettings",
    "default_tags",
    "flatten_config",
    "open_tracker",
    "scrub_secrets",
]

BACKENDS = ("mlflow", "none")


class TrackingSettings(Protocol):
    """The attributes open_tracker reads (bitcpm.config.tracking.TrackingConfig provides them)."""

    # Read-only properties so a dataclass with `tags: dict[str, str]` satisfies the protocol.
    @property
    def backend(self) -> str: ...
    @property
    def uri(self) -> str | None: ...
    @property
    def experiment(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


def open_tracker(
    cfg: TrackingSettings,
    *,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    resume_run_id: str | None = None,
) -> Tracker:
    """Open a run: `params` may be nested (it is flattened); tags layer default_tags < cfg.tags < `tags`."""
    if cfg.backend == "none":
        return NullTracker()
    if cfg.backend != "mlflow":
        raise ValueError(f"unknown tracking backend {cfg.backend!r}; expected one of {', '.join(BACKENDS)}")
    # Imported here: mlflow takes about a second to import and the CLI path must stay fast.
    from bitcpm.tracking.mlflow_tracker import start_mlflow_run

    merged_tags = {**default_tags(), **dict(cfg.tags or {}), **dict(tags)}
    return start_mlflow_run(
        uri=resolve_store_uri(cfg.uri),
        experiment=cfg.experiment,
        run_name=run_name,
        params=flatten_config(params),
        tags={str(k): str(v) for k, v in merged_tags.items()},
        resume_run_id=resume_run_id,
    )
