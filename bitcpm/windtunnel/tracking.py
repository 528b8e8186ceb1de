"""Finding a study's parent run again (report, transfer); studies are opened by bitcpm.frontend.study."""

from __future__ import annotations

from bitcpm.config.tracking import TrackingConfig
from bitcpm.frontend.study_tracking import STUDY_TAG

KIND_TAG = "bitcpm.windtunnel"  # which wind-tunnel tool made a run (coordcheck)


def store_uri(cfg: TrackingConfig) -> str:
    """The tracking URI a job would use (sqlite:///mlflow.db in the working directory by default)."""
    from bitcpm.tracking.store_uri import resolve_store_uri

    return resolve_store_uri(cfg.uri)


def experiment_name(cfg: TrackingConfig) -> str:
    """The experiment a job would use (tracking.experiment, else $MLFLOW_EXPERIMENT_NAME, else 'bitcpm')."""
    from bitcpm.tracking.store_uri import resolve_experiment

    return resolve_experiment(cfg.experiment)


def find_study_run(client, experiment: str, study: str):
    """The parent run of `study` in `experiment` (newest if several), or None."""
    from bitcpm.tracking.client import find_runs, parent_of

    parents = [r for r in find_runs(client, experiment, {STUDY_TAG: study}) if parent_of(r) is None]
    return parents[0] if parents else None
