"""A real MLflow server on loopback goes away mid-run and comes back: no metric step is lost."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitcpm.training.metrics_log import metric_series
from tests.conftest import only_run_dir, run_train

pytestmark = pytest.mark.integration


def _steps_done(out: Path) -> int:
    logs = list(out.glob("*/metrics.jsonl")) if out.exists() else []
    return max(metric_series(logs[0], "loss"), default=0) if logs else 0


def test_server_stopped_and_restarted_mid_run(tmp_path: Path, data_cache: Path) -> None:
    from mlflow.tracking import MlflowClient

    from tests.support.mlflow_server import start_local_server

    steps = 60
    server = start_local_server(f"sqlite:///{tmp_path}/server.db")
    args = [
        "experiment=smoke",
        f"train.steps={steps}",
        "train.eval_interval=0",
        "tracking=mlflow",
        f"tracking.uri={server.uri}",
        "tracking.experiment=outage",
        "tracking.log_interval=1",
        f"data.cache_dir={data_cache}",
        f"train.output_root={tmp_path}/out",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitcpm.train", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while _steps_done(tmp_path / "out") < 5 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        server.stop()
        stopped_at = _steps_done(tmp_path / "out")
        while _steps_done(tmp_path / "out") < stopped_at + 10 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        server.start()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == 0, err[-3000:]
        assert stopped_at < steps, "the run finished before the outage began"
        warnings = [ln for ln in (out + err).splitlines() if "unreachable" in ln]
        assert len(warnings) == 1, warnings  # warned once, not per step
        # Whatever could not be sent before the run ended is replayed by the next start of the same command.
        again = run_train(args[:-2], tmp_path, data_cache)
        assert again.returncode == 0, again.stderr[-3000:]
        client = MlflowClient(server.uri)
        (run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        history = client.get_metric_history(run.info.run_id, "loss")
        logged = sorted(m.step for m in history)
        assert logged == list(range(1, steps + 1))  # every step exactly once
        local = metric_series(only_run_dir(tmp_path) / "metrics.jsonl", "loss")
        assert {m.step: m.value for m in history} == pytest.approx(local)
    finally:
        server.stop()
