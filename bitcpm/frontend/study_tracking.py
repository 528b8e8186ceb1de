"""MLflow runs above the workers' runs: a study is a parent run, each trial a child, a pipeline a run of its stages.

Workers open their own runs; they become children because the front end puts the parent's id into the
job's tracking.tags as `mlflow.parentRunId` (MLflow's own nesting tag, which its UI draws as a tree) before
writing RUN_DIR/config.yaml. Parent runs are found again by a tag (`bitcpm.study_id`, `bitcpm.pipeline_id`),
so re-running a study continues the same parent instead of adding a second one. mlflow is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bitcpm.config.tracking import TrackingConfig

PARENT_TAG = "mlflow.parentRunId"
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
    from mlflow.tracking import MlflowClient

    from bitcpm.tracking.store_uri import resolve_store_uri

    return MlflowClient(tracking_uri=resolve_store_uri(tracking.uri))


def _find_run(tracking: TrackingConfig, tag: str, value: str) -> str | None:
    client = _client(tracking)
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
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

    existing = _find_run(tracking, id_tag, id_value)
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
    client = _client(tracking)
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        return None
    query = f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.config_hash = '{config_hash}'"
    runs = client.search_runs([experiment.experiment_id], filter_string=query, max_results=1)
    return runs[0].info.run_id if runs else None


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
) -> str:
    """Log a trial's overrides (params) and losses (metrics) on its run; a trial whose worker never opened
    a run (it failed first) gets a FAILED run of its own, so the study shows every trial."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking)
    if run_id is None:
        experiment = client.get_experiment_by_name(tracking.experiment)
        experiment_id = (
            experiment.experiment_id if experiment is not None else client.create_experiment(tracking.experiment)
        )
        run_id = client.create_run(experiment_id, run_name=run_name, tags={PARENT_TAG: parent_id}).info.run_id
        client.set_terminated(run_id, status="FAILED")
    existing = client.get_run(run_id).data.params
    new_params = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    stamp = _now_ms()
    entries = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if v is not None]
    run_tags = [RunTag(k, str(v)[:5000]) for k, v in {**tags, "bitcpm.trial_status": _status(failed)}.items()]
    for start in range(0, max(len(new_params), 1), 100):
        client.log_batch(run_id, params=new_params[start : start + 100])
    client.log_batch(run_id, metrics=entries, tags=run_tags)
    return run_id


def _status(failed: bool) -> str:
    return "failed" if failed else "finished"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def close_parent(
    tracking: TrackingConfig, run_id: str, *, summary_md: str, metrics: Mapping[str, float | None], failed: bool
) -> None:
    """Put the summary on a parent run (description, summary.md, metrics) and end it."""
    from mlflow.entities import Metric, RunTag

    client = _client(tracking)
    stamp = _now_ms()
    entries = [Metric(k, float(v), stamp, 0) for k, v in metrics.items() if v is not None]
    client.log_batch(run_id, metrics=entries, tags=[RunTag(NOTE_TAG, summary_md[:5000])])
    client.log_text(run_id, summary_md, "summary.md")
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
