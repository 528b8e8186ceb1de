"""Tests for the MLflow tracker against a real sqlite tracking store."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bitcpm.tracking import open_tracker
from bitcpm.tracking.limits import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
from bitcpm.tracking.mlflow_tracker import RESUME_PARAM_TAG_PREFIX

pytestmark = pytest.mark.quick


@dataclass
class Cfg:
    """Stand-in for bitcpm.config.tracking.TrackingConfig."""

    uri: str | None
    experiment: str
    backend: str = "mlflow"
    run_name: str | None = None
    log_interval: int = 10
    tags: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    # One database for the module: creating MLflow's schema costs about a second per store.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def cfg(store_uri, request):
    # One experiment per test keeps runs apart inside the shared store.
    return Cfg(uri=store_uri, experiment=re.sub(r"\W", "_", request.node.name))


@pytest.fixture
def client(store_uri):
    return MlflowClient(tracking_uri=store_uri)


def test_many_params_and_long_value_round_trip(cfg, client):
    params = {
        "group": {f"p{i:03d}": i for i in range(250)},
        "long": "v" * 7000,
        "opt": {"betas": [0.9, 0.95]},
    }
    with open_tracker(cfg, run_name="params", params=params, tags={}) as tracker:
        run_id = tracker.run_id
    run = client.get_run(run_id)
    assert len(params["group"]) > 2 * MAX_PARAMS_TAGS_PER_BATCH
    assert {f"group.p{i:03d}": str(i) for i in range(250)}.items() <= run.data.params.items()
    long = run.data.params["long"]
    assert len(long) == MAX_PARAM_VAL_LENGTH and long.startswith("v" * 100)
    assert long.endswith("...[truncated, 7000 chars]")
    assert run.data.params["opt.betas"] == "[0.9,0.95]"
    assert run.info.status == "FINISHED" and run.info.run_name == "params"


def test_tags_include_provenance_and_layering(cfg, client):
    cfg.tags = {"team": "cfg", "layer": "cfg"}
    tracker = open_tracker(cfg, run_name="tags", params={}, tags={"layer": "call", "mlflow.source.name": "train"})
    tracker.set_tags({"phase": "warmup", "long": "t" * 9000})
    tracker.close()
    tags = client.get_run(tracker.run_id).data.tags
    assert tags["team"] == "cfg" and tags["layer"] == "call" and tags["phase"] == "warmup"
    assert tags["mlflow.source.name"] == "train" and tags["mlflow.runName"] == "tags"
    assert "bitcpm.version.mlflow" in tags and "bitcpm.git.commit" in tags
    assert len(tags["long"]) == 8000 and tags["long"].endswith("...[truncated, 9000 chars]")


def test_metrics_history_and_invalid_keys(cfg, client):
    with open_tracker(cfg, run_name="metrics", params={}, tags={}) as tracker:
        for step in (0, 10, 20):
            tracker.log_metrics({"loss/train": 1.0 / (step + 1), "grad_norm": None, "lr[0]": step * 0.1}, step)
        many = {f"m{i}": float(i) for i in range(1500)}
        tracker.log_metrics(many, step=30)
    history = client.get_metric_history(tracker.run_id, "loss/train")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (10, 1 / 11), (20, 1 / 21)]
    assert [m.step for m in client.get_metric_history(tracker.run_id, "lr_0_")] == [0, 10, 20]
    metrics = client.get_run(tracker.run_id).data.metrics
    assert "grad_norm" not in metrics and metrics["m1499"] == 1499.0


def test_artifacts_listed(cfg, client, tmp_path):
    config = tmp_path / "resolved.yaml"
    config.write_text("model:\n  hidden: 256\n")
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    with open_tracker(cfg, run_name="artifacts", params={}, tags={}) as tracker:
        tracker.log_artifact(config, "config")
        tracker.log_artifact(config)
        tracker.log_artifact(folder, "plots")
        tracker.log_text("hello", "notes/readme.txt")
        with pytest.raises(FileNotFoundError):
            tracker.log_artifact(tmp_path / "missing.yaml")
    run_id = tracker.run_id
    assert {f.path for f in client.list_artifacts(run_id)} == {"config", "plots", "notes", "resolved.yaml"}
    assert [f.path for f in client.list_artifacts(run_id, "config")] == ["config/resolved.yaml"]
    assert [f.path for f in client.list_artifacts(run_id, "plots")] == ["plots/a.txt"]
    local = client.download_artifacts(run_id, "config/resolved.yaml", str(tmp_path / "dl"))
    assert Path(local).read_text() == config.read_text()


def test_resume_continues_same_run(cfg, client):
    params = {"model": {"hidden": 256}, "train": {"iters": 100}}
    with open_tracker(cfg, run_name="resume", params=params, tags={}) as first:
        first.log_metrics({"loss": 2.0}, step=1)
    resumed_params = {"model": {"hidden": 256}, "train": {"iters": 200}, "new": "x"}
    resumed = open_tracker(cfg, run_name="other", params=resumed_params, tags={}, resume_run_id=first.run_id)
    assert resumed.run_id == first.run_id
    assert client.get_run(first.run_id).info.status == "RUNNING"
    resumed.log_metrics({"loss": 1.0}, step=2)
    resumed.close()
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "resume"
    assert run.data.params == {"model.hidden": "256", "train.iters": "100", "new": "x"}
    assert run.data.tags[f"{RESUME_PARAM_TAG_PREFIX}train.iters"] == "200"
    assert [(m.step, m.value) for m in client.get_metric_history(first.run_id, "loss")] == [
        (1, 2.0),
        (2, 1.0),
    ]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_resume_unknown_run_is_a_value_error(cfg):
    with pytest.raises(ValueError, match="cannot resume MLflow run"):
        open_tracker(cfg, run_name="x", params={}, tags={}, resume_run_id="0" * 32)


def test_exception_marks_run_failed(cfg, client):
    with (
        pytest.raises(RuntimeError, match="diverged"),
        open_tracker(cfg, run_name="f", params={}, tags={}) as t,
    ):
        t.log_metrics({"loss": float("nan")}, step=1)
        raise RuntimeError("loss diverged")
    assert client.get_run(t.run_id).info.status == "FAILED"
    with pytest.raises(RuntimeError, match="already closed"):
        t.log_metrics({"loss": 1.0}, step=2)


def test_secrets_never_reach_the_store(cfg, client, monkeypatch):
    monkeypatch.setenv("BITCPM_TEST_API_TOKEN", "s3cr3t")
    cfg.tags = {"owner": "s3cr3t"}
    params = {
        "data": {"hub_token": "s3cr3t", "url": "https://user:s3cr3t@hub.example/d", "name": "pile"},
        "s3cr3t": 1,
        "tracking": {"password": "hunter22", "uri": "https://bob:pw123456@mlflow.example"},
    }
    tracker = open_tracker(cfg, run_name="secrets", params=params, tags={"note": "uses s3cr3t", "api_key": "k"})
    tracker.set_tags({"later": "token=s3cr3t", "fine": "yes"})
    tracker.close()
    run = client.get_run(tracker.run_id)
    stored = repr((run.data.params, run.data.tags, run.data.metrics, run.info.run_name))
    for leaked in ("s3cr3t", "hunter22", "pw123456"):
        assert leaked not in stored
    assert run.data.params["data.name"] == "pile"
    assert run.data.params["tracking.uri"] == "https://bob:***@mlflow.example"
    assert run.data.tags["fine"] == "yes" and "api_key" not in run.data.tags


def test_default_uri_is_sqlite_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_tracker(Cfg(uri=None, experiment="default"), run_name="d", params={}, tags={}) as tracker:
        tracker.log_text("x", "x.txt")
    assert (tmp_path / "mlflow.db").is_file()
    assert (tmp_path / "mlartifacts" / tracker.run_id / "artifacts" / "x.txt").is_file()
    assert not (tmp_path / "mlruns").exists()
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
