"""The MLflow side of outage handling: fast-fail HTTP, explicit timestamps, idempotent create, replay_spool."""

from __future__ import annotations

import json
import time

import pytest
from mlflow.tracking import MlflowClient

from bitcpm.config.tracking import TrackingConfig
from bitcpm.tracking import open_tracker, replay_spool
from bitcpm.tracking.mlflow_tracker import FAST_FAIL_HTTP_ENV, OPEN_ID_TAG, start_mlflow_run, use_fast_fail_http
from bitcpm.tracking.resilient import ResilientTracker
from tests.support.mlflow_server import free_port

pytestmark = pytest.mark.quick


def Cfg(uri: str | None) -> TrackingConfig:  # noqa: N802 (reads like the config it builds)
    """The real tracking config, pointed at uri."""
    return TrackingConfig(uri=uri, experiment="outage")


@pytest.fixture
def store_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def fast_fail(monkeypatch):
    """Start without the variables and remove what open_tracker sets, so no other test fails fast."""
    for name in FAST_FAIL_HTTP_ENV:
        # setenv first: delenv of an unset variable records nothing to undo.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_fast_fail_settings_keep_what_the_user_set(monkeypatch, fast_fail):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    settings = use_fast_fail_http()
    assert settings["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert settings["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert settings["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "0"


def test_explicit_timestamps_and_resent_points_are_not_duplicated(store_uri):
    tracker = start_mlflow_run(uri=store_uri, experiment="e", run_name="r", params={}, tags={})
    points = [({"loss": 1.0, "skip": None}, 1, 1_000), ({"loss": 0.5}, 2, 2_000)]
    tracker.log_metric_points(points)
    tracker.log_metric_points(points)  # a replay whose first reply was lost
    tracker.log_metric_points([({"loss": 0.25}, 3, 3_000)])
    tracker.close()
    history = MlflowClient(tracking_uri=store_uri).get_metric_history(tracker.run_id, "loss")
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [(1, 1.0, 1000), (2, 0.5, 2000), (3, 0.25, 3000)]


def test_retried_create_finds_the_run_an_earlier_attempt_made(store_uri):
    first = start_mlflow_run(uri=store_uri, experiment="e", run_name="r", params={"a": 1}, tags={}, open_id="abc")
    again = start_mlflow_run(
        uri=store_uri, experiment="e", run_name="r", params={"a": 1}, tags={}, open_id="abc", retry=True
    )
    other = start_mlflow_run(uri=store_uri, experiment="e", run_name="r", params={}, tags={}, open_id="def")
    assert again.run_id == first.run_id != other.run_id
    client = MlflowClient(tracking_uri=store_uri)
    assert client.get_run(first.run_id).data.tags[OPEN_ID_TAG] == "abc"


def test_resilient_open_tracker_on_a_local_store(store_uri, tmp_path, fast_fail):
    spool = tmp_path / "run" / "mlflow_spool.jsonl"
    params = {"model": {"hidden": 64}}
    with open_tracker(Cfg(uri=store_uri), run_name="r", params=params, tags={"k": "v"}, spool_path=spool) as tracker:
        assert isinstance(tracker, ResilientTracker) and tracker.run_id is not None
        for step in (1, 2, 3):
            tracker.log_metrics({"loss": 1.0 / step}, step)
        tracker.log_text("model:\n  hidden: 64\n", "config.yaml")
    client = MlflowClient(tracking_uri=store_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params["model.hidden"] == "64" and run.data.tags["k"] == "v"
    assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == [1, 2, 3]
    assert not spool.exists()


def test_unreachable_server_at_start_then_replay_spool(store_uri, tmp_path, fast_fail, capsys):
    spool = tmp_path / "mlflow_spool.jsonl"
    down = Cfg(uri=f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    tracker = open_tracker(down, run_name="offline", params={"lr": 0.1}, tags={"k": "v"}, spool_path=spool)
    opened_s = time.monotonic() - start
    assert tracker.run_id is None and opened_s < 5.0
    latencies = []
    for step in (1, 2, 3):
        t0 = time.perf_counter()
        tracker.log_metrics({"loss": float(step)}, step)
        latencies.append(time.perf_counter() - t0)
    assert max(latencies) < 0.05
    tracker.close()
    err = capsys.readouterr().err
    assert err.count("bitcpm: warning: MLflow at") == 2  # unreachable once, still unreachable at close
    assert "Connection refused" in err and str(spool) in err
    header = json.loads(spool.read_text().splitlines()[0])
    assert header["start"]["run_name"] == "offline" and header["start"]["params"] == {"lr": "0.1"}
    # The server is gone for good: replay into another store (e.g. after moving the database).
    assert replay_spool(Cfg(uri=store_uri), spool) == 4
    client = MlflowClient(tracking_uri=store_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    assert run.info.run_name == "offline" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"} and run.data.tags["k"] == "v"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    assert not spool.exists()
