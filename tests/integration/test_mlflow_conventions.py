"""MLflow conventions: its environment variables, standard tags and training view; tracking=none writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_train
from tests.support.mlflow_server import start_local_server

pytestmark = pytest.mark.integration

SHORT = ["experiment=smoke", "train.steps=2", "train.eval_interval=0", "tracking.log_interval=1"]
STORE_LEFTOVERS = ("mlflow.db", "mlruns", "mlartifacts")


def test_mlflow_environment_variables_choose_server_and_experiment(tmp_path: Path, data_cache: Path) -> None:
    server = start_local_server(f"sqlite:///{tmp_path / 'server.db'}", artifacts_dir=tmp_path / "artifacts")
    work = tmp_path / "work"
    work.mkdir()
    with server:
        env = {"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_EXPERIMENT_NAME": "from-the-shell"}
        proc = run_train([*SHORT, "tracking=mlflow"], work, data_cache, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=server.uri)
        experiment = client.get_experiment_by_name("from-the-shell")
        assert experiment is not None
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the training view
        (run,) = client.search_runs([experiment.experiment_id])
        tags = run.data.tags
        assert tags["mlflow.source.name"] == "bitcpm.train"
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.user"]
        assert len(tags["mlflow.source.git.commit"]) == 40  # tests run from a git checkout
        assert run.data.metrics["loss"] > 0
    assert not [name for name in STORE_LEFTOVERS if (work / name).exists()]


def test_config_wins_over_the_environment(tmp_path: Path, data_cache: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mine.db'}"
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_EXPERIMENT_NAME": "ignored"}
    proc = run_train(
        [*SHORT, "tracking=mlflow", f"tracking.uri={uri}", "tracking.experiment=mine"], tmp_path, data_cache, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment_by_name("ignored") is None
    assert len(client.search_runs([client.get_experiment_by_name("mine").experiment_id])) == 1


def test_tracking_none_writes_no_store(tmp_path: Path, data_cache: Path) -> None:
    env = {k: "" for k in os.environ if k.startswith("MLFLOW_")}
    proc = run_train([*SHORT, "tracking=none", "quant=ternary_g128"], tmp_path, data_cache, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name in STORE_LEFTOVERS]
