"""Tracking through a real `mlflow server` that goes away and comes back (open_tracker with a spool)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bitcpm.config.tracking import TrackingConfig
from bitcpm.tracking import open_tracker, resilient
from bitcpm.tracking.mlflow_tracker import FAST_FAIL_HTTP_ENV
from tests.support.mlflow_server import LocalServer, free_port, start_local_server

pytestmark = pytest.mark.integration

# Every log call must return this fast while the server is down (the training step must not wait).
MAX_CALL_S = 0.5
# A restarted server must see the spool replayed well within this.
REPLAY_WAIT_S = 20.0
# Shorter than the 5 s default so the test spends its time on what it checks, not on waiting.
RETRY_INTERVAL_S = 1.0
# Stopping the server: SIGTERM, and SIGKILL for whatever still runs after this (a crash, in effect).
STOP_TIMEOUT_S = 1.0


def Cfg(uri: str | None) -> TrackingConfig:  # noqa: N802 (reads like the config it builds)
    """The real tracking config, pointed at uri."""
    return TrackingConfig(uri=uri, experiment="outage")


@pytest.fixture(autouse=True)
def _outage_settings(monkeypatch):
    # open_tracker(spool_path=...) sets MLflow's HTTP variables process-wide; undo that after each test.
    for name in FAST_FAIL_HTTP_ENV:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(resilient, "RETRY_INTERVAL_S", RETRY_INTERVAL_S)


def wait_for(condition: Callable[[], bool], timeout: float = REPLAY_WAIT_S) -> float:
    """Poll until condition() holds; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.05)
    return time.monotonic() - start


def log_steps(tracker, steps: range) -> list[float]:
    """Log loss = 1/step for each step; returns each call's duration."""
    durations = []
    for step in steps:
        start = time.perf_counter()
        tracker.log_metrics({"loss": 1.0 / step, "step_x2": 2.0 * step}, step)
        durations.append(time.perf_counter() - start)
    return durations


def assert_history(client: MlflowClient, run_id: str, last: int) -> None:
    """Steps 1..last each present exactly once with their values, for both metrics."""
    loss = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(1, last + 1))
    assert all(m.value == pytest.approx(1.0 / m.step) for m in loss)
    doubled = client.get_metric_history(run_id, "step_x2")
    assert sorted((m.step, m.value) for m in doubled) == [(s, 2.0 * s) for s in range(1, last + 1)]


def spool_header(path: Path) -> dict:
    """The spool's first line."""
    return json.loads(path.read_text().splitlines()[0])


def test_server_lost_mid_run_then_back_on_the_same_port(tmp_path, capsys):
    spool = tmp_path / "run" / "mlflow_spool.jsonl"
    server = start_local_server(f"sqlite:///{tmp_path / 'server.db'}")
    with server:
        cfg = Cfg(uri=server.uri)
        tracker = open_tracker(cfg, run_name="outage", params={"lr": 0.1}, tags={"k": "v"}, spool_path=spool)
        run_id = tracker.run_id
        assert run_id is not None
        log_steps(tracker, range(1, 21))
        server.stop(STOP_TIMEOUT_S)  # mid-stream: some of steps 1..20 may still be on their way
        down = log_steps(tracker, range(21, 41))
        tracker.set_tags({"phase": "outage"})
        tracker.log_text("written while the server was down\n", "notes/outage.txt")
        assert max(down) < MAX_CALL_S, down
        wait_for(spool.exists)
        assert spool_header(spool)["run_id"] == run_id
        outage_ended_ms = int(time.time() * 1000)
        server.start()  # same port, same database
        replay_s = wait_for(lambda: not spool.exists())
        log_steps(tracker, range(41, 51))
        tracker.close()
        client = MlflowClient(tracking_uri=server.uri)
        assert_history(client, run_id, 50)
        # Spooled metrics keep the time they were logged at, not the time they were replayed.
        outage = [m for m in client.get_metric_history(run_id, "loss") if 21 <= m.step <= 40]
        assert all(m.timestamp <= outage_ended_ms for m in outage)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["phase"] == "outage" and run.data.tags["k"] == "v"
        assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/outage.txt"]
        server.stop(STOP_TIMEOUT_S)
    err = capsys.readouterr().err
    assert err.count("bitcpm: warning:") == 1, err
    assert f"bitcpm: warning: MLflow at {cfg.uri} unreachable (" in err
    assert f"spooling metrics to {spool} and retrying" in err
    print(f"\nlog call while down: max {max(down) * 1e3:.3f} ms over {len(down)} calls; ", end="")
    print(f"spool replayed {replay_s:.2f} s after the restarted server answered /health")


def test_server_down_at_start_and_at_the_next_start_comes_up_later(tmp_path, capsys):
    spool = tmp_path / "mlflow_spool.jsonl"
    server = LocalServer(f"sqlite:///{tmp_path / 'server.db'}", free_port(), artifacts_dir=tmp_path / "artifacts")
    with server:
        cfg = Cfg(uri=server.uri)
        params = {"model": {"hidden": 64}}
        start = time.monotonic()
        first = open_tracker(cfg, run_name="late", params=params, tags={"k": "v"}, spool_path=spool)
        open_s = time.monotonic() - start
        assert first.run_id is None and open_s < 5.0
        down = log_steps(first, range(1, 11))
        first.log_text("model:\n  hidden: 64\n", "config.yaml")
        header = spool_header(spool)
        assert header["run_id"] is None and header["start"]["run_name"] == "late"
        assert header["start"]["params"] == {"model.hidden": "64"} and header["start"]["tags"]["k"] == "v"
        first.close("KILLED")  # preempted before the server ever answered: the spool stays
        assert spool.exists() and "still unreachable at close" in capsys.readouterr().err
        # The requeued job has no run id in its checkpoint and starts while the server is still down.
        second = open_tracker(cfg, run_name="late", params=params, tags={"k": "v"}, spool_path=spool)
        assert second.run_id is None
        down += log_steps(second, range(11, 21))
        assert max(down) < MAX_CALL_S, down
        server.start()
        wait_for(lambda: second.run_id is not None)
        run_id = second.run_id
        # Until close, the spool keeps the late-created run's id in case the process dies.
        pinned = {"bitcpm_spool": 1, "run_id": run_id, "start": None, "pinned": True}
        wait_for(lambda: spool.read_text() == json.dumps(pinned, separators=(",", ":")) + "\n")
        log_steps(second, range(21, 31))
        second.close()
        assert not spool.exists()
        client = MlflowClient(tracking_uri=server.uri)
        assert_history(client, run_id, 30)
        run = client.get_run(run_id)
        assert run.info.run_name == "late" and run.info.status == "FINISHED"
        assert run.data.params["model.hidden"] == "64" and run.data.tags["k"] == "v"
        assert [f.path for f in client.list_artifacts(run_id)] == ["config.yaml"]
        assert len(client.search_runs([run.info.experiment_id])) == 1
        server.stop(STOP_TIMEOUT_S)
    assert capsys.readouterr().err.count("bitcpm: warning:") == 1  # the second session's
    print(f"\nopen_tracker with the server down took {open_s * 1e3:.1f} ms")
