"""MLflow runs above the workers' runs: a study is a parent run, each trial a child, a pipeline a run of its stages.

Workers open their own runs; they become children because the front end puts the parent's id into the
job's tracking.tags (bitcpm.tracking.client.child_of: MLflow's own nesting tag, which its UI draws as a tree)
before writing RUN_DIR/config.yaml. Parent runs are found again by a tag (`bitcpm.study_id`, `bitcpm.pipeline_id`),
so re-running a study continues the same parent instead of adding a second one. MLflow is reached through
bitcpm.tracking.client, which imports mlflow only when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bitcpm.config.tracking import TrackingConfig
from bitcpm.tracking import client as mlflow_client
from bitcpm.tracking.store_uri import resolve_experiment, resolve_store_uri

STUDY_TAG = "bitcpm.study"
STUDY_ID_TAG = "bitcpm.study_id"
PIPELINE_ID_TAG = "bitcpm.pipeline_id"
TRIAL_TAG = "bitcpm.trial"
OVERRIDES_TAG = "bitcpm.overrides"
NOTE_TAG = "mlflow.note.content"  # shown as the run's description in the MLflow UI


def tracked(tracking: TrackingConfig) -> bool:
    """Whether runs of this tracking config go to MLflow."""
    return tracking.backend == "mlflow"


def _client(tracking: TrackingConfig):
    return mlflow_client.open_client(resolve_store_uri(tracking.uri))


def _find_run(tracking: TrackingConfig, tags: Mapping[str, str]) -> str | None:
    runs = mlflow_client.find_runs(_client(tracking), resolve_experiment(tracking.experiment), tags, max_results=1)
    return runs[0].info.run_id if runs else None


def open_parent(
    tracking: TrackingConfig,
    *,
    run_name: str,
    id_tag: str,
    id_value: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
) -> str:
    """Create (or find again by `id_tag`) a parent run, leave it RUNNING and return its id."""
    from bitcpm.tracking import open_tracker

    existing = _find_run(tracking, {id_tag: id_value})
    tracker = open_tracker(
        tracking,
        run_name=run_name,
        params=params,
        tags={**tags, id_tag: id_value, "mlflow.source.name": "bitcpm.train"},
        resume_run_id=existing,
    )
    return str(tracker.run_id)


def child_run_id(tracking: TrackingConfig, parent_id: str, config_hash: str) -> str | None:
    """The run a worker opened for the run directory with this config hash under `parent_id`."""
    return _find_run(tracking, {**mlflow_client.child_of(parent_id), "config_hash": config_hash})


def trial_run_id(tracking: TrackingConfig, parent_id: str, trial: int) -> str | None:
    """The run that holds trial number `trial` (1-based) of the study run `parent_id`, if one was recorded."""
    return _find_run(tracking, {**mlflow_client.child_of(parent_id), TRIAL_TAG: str(trial)})


def adopt_run(tracking: TrackingConfig, parent_id: str, config_hash: str, tags: Mapping[str, str]) -> str | None:
    """The run a worker opened for this config hash under an earlier study (one later widened or changed), made a
    child of `parent_id` with `tags`: a trial that finished before is shown in the study that now holds it, not
    trained again."""
    run_id = _find_run(tracking, {"config_hash": config_hash})
    if run_id is not None:
        mlflow_client.set_tags(_client(tracking), run_id, {**mlflow_client.child_of(parent_id), **tags})
    return run_id


def record_trial(
    tracking: TrackingConfig,
    run_id: str | None,
    *,
    parent_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, str],
    metrics: Mapping[str, float | None],
    failed: bool,
    status: str,
) -> str:
    """Log a trial's overrides (params), losses (metrics) and how it ended (bitcpm.trial_status: finished,
    failed, pruned, stopped, skipped) on its run; a trial without one gets a run of its own, so the study shows every
    trial: FAILED when its worker failed before opening one, FINISHED when its runs finished under another study."""
    client = _client(tracking)
    if run_id is None:
        experiment = resolve_experiment(tracking.experiment)
        run_id = mlflow_client.create_run(client, experiment, run_name, {}, parent=parent_id)
        mlflow_client.finish_run(client, run_id, "FAILED" if failed else "FINISHED")
    mlflow_client.log_params(client, run_id, params)
    mlflow_client.log_metrics(client, run_id, metrics)
    mlflow_client.set_tags(client, run_id, {**tags, "bitcpm.trial_status": status})
    return run_id


def close_parent(
    tracking: TrackingConfig, run_id: str, *, summary_md: str, metrics: Mapping[str, float | None], failed: bool
) -> None:
    """Put the summary on a parent run (description, summary.md, metrics) and end it."""
    client = _client(tracking)
    mlflow_client.log_metrics(client, run_id, metrics)
    mlflow_client.set_tags(client, run_id, {NOTE_TAG: summary_md})
    mlflow_client.log_text(client, run_id, summary_md, "summary.md")
    mlflow_client.finish_run(client, run_id, "FAILED" if failed else "FINISHED")


def tag_run(tracking: TrackingConfig, run_id: str, tags: Mapping[str, str]) -> None:
    """Set tags on a run."""
    mlflow_client.set_tags(_client(tracking), run_id, tags)
