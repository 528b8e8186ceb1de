"""Tracker backed by an MLflow tracking store through MlflowClient (no fluent, process-global run state)."""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import LifecycleStage, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bitcpm.tracking import limits
from bitcpm.tracking.base import Tracker
from bitcpm.tracking.client import ensure_experiment, open_client
from bitcpm.tracking.keys import KeyMapper
from bitcpm.tracking.run_info import UNKNOWN, scrub_secrets
from bitcpm.tracking.spool import MetricPoint, RunSpec
from bitcpm.tracking.store_uri import default_artifact_location

log = logging.getLogger(__name__)

# Params cannot change once logged; a resumed run with a different value records it under this prefix.
RESUME_PARAM_TAG_PREFIX = "bitcpm.resume.param."
_BAD_RUN_ID_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
# Marks a run with the id of the open attempt that created it, so a retried create can find it.
OPEN_ID_TAG = "bitcpm.open_id"

# MLflow's HTTP defaults (7 retries with exponential backoff, 120 s timeout) stall a caller for about
# four minutes per request while a server is down (measured: 247 s against a closed port). With a
# spool behind the tracker, failing in milliseconds is better: its sender thread does the retrying,
# every few seconds, and all its requests are safe to repeat. No urllib3 retries at all: each one
# would also log a "Retrying ..." warning wherever logging is configured.
FAST_FAIL_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def use_fast_fail_http() -> dict[str, str]:
    """Make this process's MLflow HTTP requests fail fast; values the user already set win.

    MLflow reads these variables on every request and has no per-client setting, so they are
    process-wide; returns the values now in effect.
    """
    for name, value in FAST_FAIL_HTTP_ENV.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in FAST_FAIL_HTTP_ENV}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers often run under a uid without a passwd entry
        return UNKNOWN


def system_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """MLflow's own run tags, which the fluent API fills in but MlflowClient leaves to the caller."""
    system = {
        "mlflow.user": _user(),
        "mlflow.source.name": sys.argv[0] or "python",
        "mlflow.source.type": "LOCAL",
    }
    commit = tags.get("bitcpm.git.commit", UNKNOWN)
    if commit != UNKNOWN:
        system["mlflow.source.git.commit"] = commit
    return system


class MlflowTracker(Tracker):
    """Logs one MLflow run, keeping every request within MLflow's batch and length limits."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        super().__init__()
        self.client = client
        self.run_id = run_id
        self._param_keys = KeyMapper(limits.MAX_ENTITY_KEY_LENGTH)
        self._tag_keys = KeyMapper(limits.MAX_ENTITY_KEY_LENGTH)
        self._metric_keys = KeyMapper(limits.MAX_ENTITY_KEY_LENGTH)

    def _ensure_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"MLflow run {self.run_id} is already closed")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params the run lacks; a changed value goes to a tag because params are immutable."""
        self._ensure_open()
        existing = self.client.get_run(self.run_id).data.params
        new: list[Param] = []
        changed: dict[str, str] = {}
        for name, value in scrub_secrets(params).items():
            key = self._param_keys(name)
            value = limits.truncate(value, limits.MAX_PARAM_VAL_LENGTH)
            if key not in existing:
                new.append(Param(key, value))
            elif existing[key] != value:
                changed[key] = value
        for batch in limits.batches(new, limits.MAX_PARAMS_TAGS_PER_BATCH, lambda p: limits.json_size(p.key, p.value)):
            self.client.log_batch(self.run_id, params=batch)
        if changed:
            log.warning(
                "run %s already has different values for params %s; recording the new values as %s* tags",
                self.run_id,
                sorted(changed),
                RESUME_PARAM_TAG_PREFIX,
            )
            self.set_tags({f"{RESUME_PARAM_TAG_PREFIX}{k}": v for k, v in changed.items()})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add or overwrite tags, secrets scrubbed and values truncated with a marker."""
        self._ensure_open()
        entries = [
            RunTag(self._tag_keys(key), limits.truncate(value, limits.MAX_TAG_VAL_LENGTH))
            for key, value in scrub_secrets(tags).items()
        ]
        for batch in limits.batches(
            entries, limits.MAX_PARAMS_TAGS_PER_BATCH, lambda t: limits.json_size(t.key, t.value)
        ):
            self.client.log_batch(self.run_id, tags=batch)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log metrics at `step`, stamped now; None values (e.g. a skipped grad norm) are left out."""
        self.log_metric_points([(metrics, step, int(time.time() * 1000))])

    def log_metric_points(self, points: Iterable[MetricPoint]) -> None:
        """Log metrics of many steps with their own timestamps in as few requests as MLflow's limits allow."""
        self._ensure_open()
        entries = [
            Metric(self._metric_keys(key), float(value), int(timestamp), int(step))
            for metrics, step, timestamp in points
            for key, value in metrics.items()
            if value is not None
        ]
        max_count = min(limits.MAX_METRICS_PER_BATCH, limits.MAX_ENTITIES_PER_BATCH)
        for batch in limits.batches(entries, max_count, lambda m: limits.json_size(m.key)):
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a whole directory into the run's artifacts."""
        self._ensure_open()
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)
        else:
            raise FileNotFoundError(f"artifact to log does not exist: {path}")

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store text as an artifact file."""
        self._ensure_open()
        self.client.log_text(self.run_id, text, artifact_file)

    def _finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
        uri = str(self.client.tracking_uri)
        if uri.startswith(("http://", "https://")):
            from bitcpm.tracking.links import training_view_url

            # MLflow's own "View run" link opens the GenAI view; this one opens the run's charts.
            experiment_id = self.client.get_run(self.run_id).info.experiment_id
            print(f"bitcpm: MLflow charts: {training_view_url(uri, experiment_id, self.run_id)}", flush=True)


def _resume(client: MlflowClient, run_id: str, experiment: str) -> MlflowTracker:
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code not in _BAD_RUN_ID_CODES:
            raise
        raise ValueError(f"cannot resume MLflow run {run_id!r}: {exc.message}") from exc
    if run.info.lifecycle_stage == LifecycleStage.DELETED:
        raise ValueError(f"cannot resume MLflow run {run_id!r}: it has been deleted")
    actual = client.get_experiment(run.info.experiment_id).name
    if actual != experiment:
        log.warning("resuming run %s in experiment %r, not the configured %r", run_id, actual, experiment)
    client.update_run(run_id, status="RUNNING")
    return MlflowTracker(client, run_id)


def _find_opened_run(client: MlflowClient, experiment_id: str, open_id: str) -> str | None:
    """Id of the run an earlier attempt with this open id created (its reply may have been lost)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{OPEN_ID_TAG}` = '{open_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


def start_mlflow_run(
    *,
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    resume_run_id: str | None = None,
    open_id: str | None = None,
    retry: bool = False,
) -> MlflowTracker:
    """Create (or resume) a run in `experiment` at tracking `uri` and log its params and tags.

    `open_id` tags a created run; with `retry`, a run an earlier attempt with that id created is
    resumed instead of creating a second one (the earlier reply may have been lost in an outage).
    """
    client = open_client(uri)
    if resume_run_id:
        tracker = _resume(client, resume_run_id, experiment)
    else:
        experiment_id = ensure_experiment(client, experiment, default_artifact_location(uri))
        earlier = _find_opened_run(client, experiment_id, open_id) if open_id and retry else None
        if earlier is not None:
            tracker = _resume(client, earlier, experiment)
        else:
            create_tags = {OPEN_ID_TAG: open_id} if open_id else None
            run = client.create_run(experiment_id, run_name=run_name, tags=create_tags)
            tracker = MlflowTracker(client, run.info.run_id)
    try:
        tracker.set_tags({**system_tags(tags), **tags})
        tracker.log_params(params)
    except BaseException:
        # Leave no run dangling in RUNNING; the original error matters more than a failed close.
        with contextlib.suppress(Exception):
            tracker.close("FAILED")
        raise
    return tracker


class MlflowRunOpener:
    """Opens runs in one experiment of one tracking store; what ResilientTracker retries against."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment

    def open_run(self, spec: RunSpec, *, retry: bool = False) -> MlflowTracker:
        """Create or resume the run `spec` describes (see start_mlflow_run for `retry`)."""
        return start_mlflow_run(
            uri=self.uri,
            experiment=self.experiment,
            run_name=spec.run_name,
            params=spec.params,
            tags=spec.tags,
            resume_run_id=spec.resume_run_id,
            open_id=spec.open_id,
            retry=retry,
        )

    def attach_run(self, run_id: str) -> MlflowTracker:
        """Tracker on an existing run, without touching its status, params or tags."""
        return MlflowTracker(open_client(self.uri), run_id)
