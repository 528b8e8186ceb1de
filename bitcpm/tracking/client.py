"""The one door to MLflow for code outside bitcpm.tracking: a client on a store, experiments, nested runs, logging.

Callers hold the client that open_client returns as an opaque handle and pass it back to these functions. mlflow
is imported inside the functions only: importing this module must stay cheap for the front end and the CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MLflow's own nesting tag: its UI draws a run carrying it under the run it names.
PARENT_TAG = "mlflow.parentRunId"
# MLflow 3's UI opens an experiment in its GenAI view unless this tag marks it as model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# The lengths and batch sizes bitcpm has always cut to (MLflow 2's limits, within MLflow 3's).
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
# MLflow's default page size for search_runs.
_DEFAULT_MAX_RESULTS = 1000


def open_client(uri: str) -> Any:
    """An MlflowClient on tracking `uri` (a sqlite file's missing directories are created)."""
    from mlflow.tracking import MlflowClient

    from bitcpm.tracking.store_uri import sqlite_path

    database = sqlite_path(uri)
    if database is not None:
        # sqlite creates the file but not missing parent directories.
        database.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Id of the named experiment, creating it (or restoring it from the trash) when needed.

    The experiment is marked as model training, so MLflow's UI opens it on its runs and charts.
    """
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND}
            )
        except MlflowException as exc:
            # A parallel sweep job may have created it between our lookup and our create.
            experiment = client.get_experiment_by_name(name)
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" or experiment is None:
                raise
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        # A deleted experiment still owns its name, so creating a new one would fail.
        log.warning("MLflow experiment %r was deleted; restoring it", name)
        client.restore_experiment(experiment.experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older bitcpm or by hand: only fill a gap
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return experiment.experiment_id


def experiment_id(client: Any, name: str) -> str:
    """Id of experiment `name`, created (artifacts next to a sqlite store) or restored when needed."""
    from bitcpm.tracking.store_uri import default_artifact_location

    return ensure_experiment(client, name, default_artifact_location(str(client.tracking_uri)))


def child_of(parent_run_id: str) -> dict[str, str]:
    """The tag that makes a run the child of `parent_run_id`."""
    return {PARENT_TAG: str(parent_run_id)}


def parent_of(run: Any) -> str | None:
    """Id of the run's parent run, or None for a top-level run."""
    return run.data.tags.get(PARENT_TAG)


def create_run(
    client: Any, experiment: str, run_name: str, tags: Mapping[str, str], *, parent: str | None = None
) -> str:
    """Create a RUNNING run in experiment `experiment` (a child of `parent` if given) and return its id."""
    all_tags = {**tags, **(child_of(parent) if parent is not None else {})}
    return client.create_run(experiment_id(client, experiment), run_name=run_name, tags=all_tags).info.run_id


def restart_run(client: Any, run_id: str) -> None:
    """Mark a finished run RUNNING again (a resumed study's parent)."""
    client.update_run(run_id, status="RUNNING")


def finish_run(client: Any, run_id: str, status: str = "FINISHED") -> None:
    """End a run with `status` (FINISHED, FAILED or KILLED)."""
    client.set_terminated(run_id, status=status)


def run_params(client: Any, run_id: str) -> dict[str, str]:
    """The params a run has logged."""
    return dict(client.get_run(run_id).data.params)


def set_tags(client: Any, run_id: str, tags: Mapping[str, Any]) -> None:
    """Add or overwrite tags (values as strings, cut to MAX_TAG_LENGTH)."""
    from mlflow.entities import RunTag

    entries = [RunTag(str(k), str(v)[:MAX_TAG_LENGTH]) for k, v in tags.items()]
    for batch in _chunks(entries, _PARAMS_PER_BATCH):
        client.log_batch(run_id, tags=batch)


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """Log the params the run lacks (values as strings, cut to MAX_PARAM_LENGTH); params never change once set."""
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    entries = [Param(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items() if str(k) not in existing]
    for batch in _chunks(entries, _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch)


def log_metrics(client: Any, run_id: str, metrics: Mapping[str, float | None], step: int = 0) -> None:
    """Log metrics at `step`, stamped now; None values are left out."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    entries = [Metric(k, float(v), stamp, step) for k, v in metrics.items() if v is not None]
    for batch in _chunks(entries, _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch)


def log_text(client: Any, run_id: str, text: str, artifact_file: str) -> None:
    """Store text as an artifact file of a run."""
    client.log_text(run_id, text, artifact_file)


def log_files(client: Any, run_id: str, paths: Iterable[Path], artifact_path: str | None = None) -> None:
    """Upload files as artifacts of a run (under `artifact_path` if given)."""
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


def find_runs(
    client: Any,
    experiment: str,
    tags: Mapping[str, str],
    *,
    finished_only: bool = False,
    max_results: int = _DEFAULT_MAX_RESULTS,
) -> list[Any]:
    """Runs of experiment `experiment` carrying every one of `tags`, newest first ([] if there is no experiment)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    terms = [f"tags.`{key}` = '{value}'" for key, value in tags.items()]
    if finished_only:
        terms.append("attributes.status = 'FINISHED'")
    return client.search_runs(
        [found.experiment_id],
        filter_string=" AND ".join(terms),
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )


def children(client: Any, parent_run_id: str) -> list[Any]:
    """Every run whose parent is `parent_run_id` (searched in the parent's experiment)."""
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=5000
    )


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    return (items[start : start + size] for start in range(0, len(items), size))
