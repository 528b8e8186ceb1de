"""The wind tunnel's study (parent) runs in MLflow, reached through bitcpm.tracking.client."""

from __future__ import annotations

from typing import Any

from bitcpm.config.tracking import TrackingConfig

STUDY_TAG = "bitcpm.study"
KIND_TAG = "bitcpm.windtunnel"


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


def open_study_run(client, experiment: str, study: str, kind: str, params: dict[str, Any]) -> str:
    """The study's parent run: the existing one (a resumed study) or a new one with provenance tags."""
    from bitcpm.tracking.client import create_run, log_params
    from bitcpm.tracking.run_info import default_tags

    found = find_study_run(client, experiment, study)
    if found is not None:
        return found.info.run_id
    tags = {**default_tags(), STUDY_TAG: study, KIND_TAG: kind, "mlflow.source.name": f"bitcpm.windtunnel {kind}"}
    run_id = create_run(client, experiment, study, tags)
    log_params(client, run_id, params)
    return run_id
