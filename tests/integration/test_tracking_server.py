"""Tracking through a real local `mlflow server` over HTTP."""

from __future__ import annotations

import socket

import pytest
from mlflow.tracking import MlflowClient

from bitcpm.config.tracking import TrackingConfig
from bitcpm.tracking import open_tracker
from tests.support.mlflow_server import ServerStartError, start_local_server

pytestmark = pytest.mark.integration


def Cfg(uri: str | None) -> TrackingConfig:  # noqa: N802 (reads like the config it builds)
    """The real tracking config, pointed at uri."""
    return TrackingConfig(uri=uri, experiment="server")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_run_logged_through_http_server(tmp_path):
    artifacts = tmp_path / "artifacts"
    config = tmp_path / "resolved.yaml"
    config.write_text("model:\n  hidden: 64\n")
    server = start_local_server(f"sqlite:///{tmp_path / 'server.db'}", artifacts_dir=artifacts)
    with server:
        assert server.uri.startswith("http://127.0.0.1:")
        params = {"model": {"hidden": 64}, "group": {f"p{i}": i for i in range(120)}}
        with open_tracker(Cfg(uri=server.uri), run_name="http", params=params, tags={"k": "v"}) as tracker:
            for step in (1, 2, 3):
                tracker.log_metrics({"loss": 1.0 / step}, step)
            tracker.log_artifact(config, "config")
        # The server restarts on the same port and still serves the run (what outage tests rely on).
        server.stop()
        assert not server.running and not _port_open(server.port)
        server.start()
        client = MlflowClient(tracking_uri=server.uri)
        run = client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == "http"
        assert run.data.params["model.hidden"] == "64" and len(run.data.params) == 121
        assert run.data.tags["k"] == "v"
        history = client.get_metric_history(tracker.run_id, "loss")
        assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
        assert [f.path for f in client.list_artifacts(tracker.run_id, "config")] == ["config/resolved.yaml"]
        # Artifacts are proxied by the server into artifacts_dir, not into the client's working dir.
        assert list(artifacts.rglob("resolved.yaml"))
    assert not server.running and not _port_open(server.port)
    assert not server.log_path.exists()


def test_failed_start_reports_log_tail(tmp_path):
    with pytest.raises(ServerStartError, match="exited with code") as info:
        start_local_server("nosuchscheme://nowhere", artifacts_dir=tmp_path)
    assert "nosuchscheme" in str(info.value)
