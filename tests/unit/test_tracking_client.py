"""bitcpm.tracking.client, the package's one door to MLflow, against a sqlite store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bitcpm.tracking import client as mc

pytestmark = pytest.mark.quick


def test_import_does_not_load_mlflow() -> None:
    code = "import sys, bitcpm.tracking.client; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_nested_runs_tags_params_metrics_and_lookups(tmp_path: Path) -> None:
    client = mc.open_client(f"sqlite:///{tmp_path / 'deep' / 'mlflow.db'}")  # the missing directory is made
    parent = mc.create_run(client, "exp", "parent", {"bitcpm.study": "s"})
    child = mc.create_run(client, "exp", "child", {"k": "v"}, parent=parent)
    experiment = client.get_experiment_by_name("exp")
    assert experiment.tags[mc.EXPERIMENT_KIND_TAG] == mc.TRAINING_KIND
    assert experiment.artifact_location == (tmp_path / "deep" / "mlartifacts").as_uri()

    assert mc.child_of(parent) == {mc.PARENT_TAG: parent}
    assert [r.info.run_id for r in mc.children(client, parent)] == [child]
    assert mc.parent_of(client.get_run(child)) == parent
    assert mc.parent_of(client.get_run(parent)) is None

    mc.log_params(client, child, {"a": 1, "long": "x" * 7000})
    mc.log_params(client, child, {"a": 2, "b": "new"})  # params never change: "a" keeps 1
    assert mc.run_params(client, child) == {"a": "1", "long": "x" * mc.MAX_PARAM_LENGTH, "b": "new"}
    mc.set_tags(client, child, {"note": "y" * 6000, "n": 3})
    tags = client.get_run(child).data.tags
    assert (tags["note"], tags["n"]) == ("y" * mc.MAX_TAG_LENGTH, "3")
    mc.log_metrics(client, child, {"loss": 1.5, "skipped": None}, step=4)
    assert [(m.step, m.value) for m in client.get_metric_history(child, "loss")] == [(4, 1.5)]
    assert "skipped" not in client.get_run(child).data.metrics

    assert mc.find_runs(client, "missing", {"k": "v"}) == []
    assert [r.info.run_id for r in mc.find_runs(client, "exp", {"k": "v", **mc.child_of(parent)})] == [child]
    assert mc.find_runs(client, "exp", {"k": "v"}, finished_only=True) == []
    mc.finish_run(client, child)
    assert [r.info.run_id for r in mc.find_runs(client, "exp", {"k": "v"}, finished_only=True)] == [child]
    mc.finish_run(client, parent, "FAILED")
    mc.restart_run(client, parent)
    assert client.get_run(parent).info.status == "RUNNING"


def test_text_and_files_become_artifacts(tmp_path: Path) -> None:
    client = mc.open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mc.create_run(client, "exp", "r", {})
    (tmp_path / "a.md").write_text("hello")
    mc.log_files(client, run, [tmp_path / "a.md"], "report")
    mc.log_text(client, run, "summary", "summary.md")
    assert sorted(a.path for a in client.list_artifacts(run)) == ["report", "summary.md"]
    assert [a.path for a in client.list_artifacts(run, "report")] == ["report/a.md"]
