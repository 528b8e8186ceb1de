"""Experiment tracking for bitcpm runs (MLflow or nothing); backends are imported only when opened."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from bitcpm.tracking.base import RUN_STATUSES, NullTracker, Tracker
from bitcpm.tracking.run_info import default_tags, flatten_config, scrub_secrets
from bitcpm.tracking.store_uri import resolve_experiment, resolve_store_uri

__all__ = [
    "RUN_STATUSES",
    "NullTracker",
    "Tracker",
    "TrackingSettings",
    "default_tags",
    "flatten_config",
    "open_tracker",
    "replay_spool",
    "resolve_experiment",
    "resolve_store_uri",
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
    def experiment(self) -> str | None: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


def open_tracker(
    cfg: TrackingSettings,
    *,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    resume_run_id: str | None = None,
    spool_path: Path | None = None,
) -> Tracker:
    """Open a run: `params` may be nested (it is flattened); tags layer default_tags < cfg.tags < `tags`.

    With `spool_path` (mlflow backend), the run survives tracking-server outages: log calls never
    block, every metric is also appended to metrics.jsonl beside that file (so the caller need not
    write it), and what the server cannot take yet is sent when it answers again, or by the next
    open_tracker given the same spool (see bitcpm.tracking.resilient).
    """
    if cfg.backend == "none":
        return NullTracker()
    if cfg.backend != "mlflow":
        raise ValueError(f"unknown tracking backend {cfg.backend!r}; expected one of {', '.join(BACKENDS)}")
    # Imported here: mlflow takes about a second to import and the CLI path must stay fast.
    from bitcpm.tracking.mlflow_tracker import MlflowRunOpener, start_mlflow_run, use_fast_fail_http

    merged_tags = {**default_tags(), **dict(cfg.tags or {}), **dict(tags)}
    uri, experiment = resolve_store_uri(cfg.uri), resolve_experiment(cfg.experiment)
    flat_params = flatten_config(params)
    str_tags = {str(k): str(v) for k, v in merged_tags.items()}
    if spool_path is None:
        return start_mlflow_run(
            uri=uri,
            experiment=experiment,
            run_name=run_name,
            params=flat_params,
            tags=str_tags,
            resume_run_id=resume_run_id,
        )
    from bitcpm.tracking.resilient import ResilientTracker
    from bitcpm.tracking.spool import RunSpec

    # Only here: without a spool, failing fast would turn a server blip into a crashed training run.
    use_fast_fail_http()
    spec = RunSpec(run_name=run_name, params=flat_params, tags=str_tags, resume_run_id=resume_run_id)
    return ResilientTracker(MlflowRunOpener(uri, experiment), spec, Path(spool_path))


def replay_spool(cfg: TrackingSettings, spool_path: Path, run_id: str | None = None) -> int:
    """Send what a spool file owes to the tracking server now; returns the number of records and metric lines sent.

    They go to `run_id`, else to the run the spool names, else to a run created from the spooled
    start request; the metrics owed are read from metrics.jsonl beside the spool. Raises if the
    server is still unreachable; the file keeps what was not sent. open_tracker(..., spool_path=...)
    does this by itself; this is for spools left behind.
    """
    if cfg.backend != "mlflow":
        raise ValueError(f"spools are replayed into MLflow; tracking backend is {cfg.backend!r}")
    from bitcpm.tracking.mlflow_tracker import MlflowRunOpener, use_fast_fail_http
    from bitcpm.tracking.spool import replay_spool_file

    use_fast_fail_http()
    return replay_spool_file(
        MlflowRunOpener(resolve_store_uri(cfg.uri), resolve_experiment(cfg.experiment)), Path(spool_path), run_id
    )
