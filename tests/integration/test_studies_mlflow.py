"""A study against a real MLflow server: one parent run, a child per trial; recipes nest their stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_train
from tests.integration.test_studies_run import TINY
from tests.support.mlflow_server import start_local_server

pytestmark = pytest.mark.integration

PARENT = "mlflow.parentRunId"


@pytest.fixture
def server(tmp_path: Path):
    with start_local_server(f"sqlite:///{tmp_path / 'server.db'}") as srv:
        yield srv


def _runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_a_2x2_study_is_one_parent_with_four_children(server, tmp_path: Path, data_cache: Path) -> None:
    from mlflow.tracking import MlflowClient

    args = [
        "-m",
        f"tracking.uri={server.uri}",
        "tracking.experiment=study",
        *TINY,
        "optim.lr=1e-2,5e-3",
        "train.seed=1,2",
    ]
    proc = run_train(args, tmp_path, data_cache, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = _runs(server.uri, "study")
    parents = [r for r in runs if PARENT not in r.data.tags]
    children = [r for r in runs if PARENT in r.data.tags]
    assert len(parents) == 1 and len(children) == 4, [(r.info.run_name, r.data.tags.get(PARENT)) for r in runs]
    parent = parents[0]
    assert {c.data.tags[PARENT] for c in children} == {parent.info.run_id}
    assert parent.data.tags["bitcpm.study"] == "multirun" and parent.info.status == "FINISHED"
    assert parent.data.tags["bitcpm.git.commit"]  # provenance of the whole study
    assert parent.data.params["space.optim.lr"] == "0.01,0.005" and parent.data.params["space.train.seed"] == "1,2"
    combos = {(c.data.params["override.optim.lr"], c.data.params["override.train.seed"]) for c in children}
    assert combos == {("0.01", "1"), ("0.01", "2"), ("0.005", "1"), ("0.005", "2")}
    for c in children:
        assert c.info.status == "FINISHED"
        assert c.data.metrics["final_val_loss"] == c.data.metrics["val_loss"]  # the worker's last validation
        assert c.data.metrics["best_val_loss"] <= c.data.metrics["final_val_loss"]
    best = min(c.data.metrics["best_val_loss"] for c in children)
    assert parent.data.metrics["best_val_loss"] == pytest.approx(best)
    summary = MlflowClient(server.uri).download_artifacts(parent.info.run_id, "summary.md", str(tmp_path))
    text = Path(summary).read_text()
    assert "4 trials, 0 failed" in text and text.count("| finished") == 4 and "**best**" in text
    assert parent.data.tags["mlflow.note.content"] == text

    again = run_train(args, tmp_path, data_cache, timeout=600)
    assert again.returncode == 0 and again.stdout.count("finished earlier, skipped") == 4
    assert len(_runs(server.uri, "study")) == 5, "a re-run continues the same parent and adds no runs"

    # Another study over trials that finished under the first (a narrowed or widened grid): nothing trains, and
    # its finished trials move under the new parent as they are (no placeholder runs).
    narrowed = [a for a in args if not a.startswith("optim.lr=")] + ["optim.lr=1e-2"]
    third = run_train(narrowed, tmp_path, data_cache, timeout=600)
    assert third.returncode == 0 and third.stdout.count("finished earlier, skipped") == 2, third.stdout[-2000:]
    runs = _runs(server.uri, "study")
    assert len(runs) == 6  # one new parent, no new trial runs
    new_parent = next(r for r in runs if PARENT not in r.data.tags and r.info.run_id != parent.info.run_id)
    moved = [r for r in runs if r.data.tags.get(PARENT) == new_parent.info.run_id]
    assert sorted(r.data.params["override.train.seed"] for r in moved) == ["1", "2"]
    assert all(r.info.status == "FINISHED" and r.data.params["optim.lr"] == "0.01" for r in moved)


def test_recipe_members_nest_study_pipeline_and_stages(server, tmp_path: Path, data_cache: Path) -> None:
    args = [
        "-m",
        "sweep=qat_lr",
        "stage.lr=5e-3,1e-2",  # two of the study's three QAT lrs
        "study.seed=1",  # one of its seeds
        f"tracking.uri={server.uri}",
        *(o for o in TINY if not o.startswith("train.steps=")),
        "train.steps=10",  # a stable run of 8 steps, QAT from its step 6 for 4
        "stage.rewarmup_steps=1",
        "optim.decay_fraction=0.25",
    ]
    proc = run_train(args, tmp_path, data_cache, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = {r.info.run_id: r for r in _runs(server.uri, "windtunnel")}
    by_stage: dict[str, list] = {}
    for r in runs.values():
        by_stage.setdefault(r.data.tags.get("stage", "?"), []).append(r)
    assert {k: len(v) for k, v in by_stage.items()} == {"study": 1, "pipeline": 2, "pretrain": 1, "qat": 2}
    study = by_stage["study"][0]
    assert all(p.data.tags[PARENT] == study.info.run_id for p in by_stage["pipeline"])
    pipelines = {p.info.run_id for p in by_stage["pipeline"]}
    for q in by_stage["qat"]:
        assert q.data.tags[PARENT] in pipelines  # each QAT stage under its own pipeline run
    assert len({q.data.tags[PARENT] for q in by_stage["qat"]}) == 2
    assert by_stage["pretrain"][0].data.tags[PARENT] in pipelines  # the shared FP stage: under the first
    assert all(p.data.metrics["final_val_loss"] > 0 for p in by_stage["pipeline"])
