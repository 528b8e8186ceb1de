"""The wind tunnel's MLflow access: study (parent) runs, trial (child) runs, artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bitcpm.config.tracking import TrackingConfig

STUDY_TAG = "bitcpm.study"
PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "bitcpm.windtunnel"


def store_uri(cfg: TrackingConfig) -> str:
    """The tracking URI a job would use (sqlite:///mlflow.db in the working directory by default)."""
    from bitcpm.tracking.store_uri import resolve_store_uri

    return resolve_store_uri(cfg.uri)


def experiment_name(cfg: TrackingConfig) -> str:
    """The experiment a job would use (tracking.experiment, else $MLFLOW_EXPERIMENT_NAME, else 'bitcpm')."""
    from bitcpm.tracking.store_uri import resolve_experiment

    return resolve_experiment(cfg.experiment)


def client_for(uri: str):
    """An MlflowClient on `uri` (the sqlite file's directory is created)."""
    from mlflow.tracking import MlflowClient

    from bitcpm.tracking.store_uri import sqlite_path

    database = sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str, uri: str) -> str:
    """Id of experiment `name`, created with artifacts next to a sqlite store."""
    from bitcpm.tracking.mlflow_tracker import ensure_experiment
    from bitcpm.tracking.store_uri import default_artifact_location

    return ensure_experiment(client, name, default_artifact_location(uri))


def find_study_run(client, experiment: str, study: str):
    """The parent run of `study` in `experiment` (newest if several), or None."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study}'", order_by=["attributes.start_time DESC"]
    )
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    return parents[0] if parents else None


def open_study_run(client, uri: str, experiment: str, study: str, kind: str, params: dict[str, Any]):
    """The study's parent run: the existing one (a resumed study) or a new one with provenance tags."""
    from bitcpm.tracking.run_info import default_tags

    found = find_study_run(client, experiment, study)
    if found is not None:
        return found.info.run_id
    tags = {**default_tags(), STUDY_TAG: study, KIND_TAG: kind, "mlflow.source.name": f"bitcpm.windtunnel {kind}"}
    run = client.create_run(experiment_id(client, experiment, uri), run_name=study, tags=tags)
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


def children(client, parent_run_id: str) -> list:
    """Every run whose mlflow.parentRunId is the given run."""
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=5000
    )


def log_files(client, run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
    """Upload files as artifacts of a run."""
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)
