"""The pretrain -> qat -> distill recipe: three linked MLflow runs; QAT starts from the trained weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.training.metrics_log import metric_series
from tests.conftest import run_train

pytestmark = pytest.mark.integration

FAST = ["train.seq_length=64", "train.steps=40", "train.eval_interval=0", "train.eval_batches=4"]


def test_pipeline_runs_three_linked_stages(tmp_path: Path, data_cache: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["experiment=debug_pipeline", *FAST, f"tracking.uri={uri}", "tracking.experiment=pipe"]
    proc = run_train(args, tmp_path, data_cache, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pipeline summary" in proc.stdout
    rows = {ln.split()[0]: ln.split() for ln in proc.stdout.split("pipeline summary")[1].splitlines()[2:5]}
    pretrain_final = float(rows["pretrain"][2])
    qat_start, qat_fresh = float(rows["qat"][1]), float(rows["qat"][3])
    assert qat_start < qat_fresh - 2.0, rows  # QAT starts from the trained weights, not from scratch
    assert qat_start < pretrain_final + 2.0, rows  # ternarising costs something, but far less than a restart

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pipe").experiment_id])
    by_stage = {r.data.tags["stage"]: r for r in runs}
    assert set(by_stage) == {"pipeline", "pretrain", "qat", "distill"}
    assert len({r.data.tags["pipeline"] for r in runs}) == 1
    pipeline = by_stage["pipeline"]  # the recipe's own run, parent of its stages in the MLflow UI
    assert {by_stage[s].data.tags["mlflow.parentRunId"] for s in ("pretrain", "qat", "distill")} == {
        pipeline.info.run_id
    }
    assert pipeline.info.status == "FINISHED" and pipeline.data.metrics["final_val_loss"] > 0
    assert by_stage["qat"].data.tags["init_from"] == by_stage["pretrain"].data.tags["run_dir"]
    assert by_stage["distill"].data.tags["init_from"] == by_stage["qat"].data.tags["run_dir"]
    assert by_stage["distill"].data.params["stage.teacher_from"] == by_stage["pretrain"].data.tags["run_dir"]
    # qat tokens=auto: 2x the pretraining decay tokens (0.2 x 40 steps = 8 steps) -> 16 steps
    qat_dir = Path(by_stage["qat"].data.tags["run_dir"])
    assert max(metric_series(qat_dir / "metrics.jsonl", "loss")) == 16

    again = run_train(args, tmp_path, data_cache, timeout=600)
    assert again.returncode == 0
    assert again.stdout.count("run already complete") == 3  # rerunning the recipe finishes nothing twice


def test_pipeline_reference_to_unknown_stage_is_one_line_error(tmp_path: Path, data_cache: Path) -> None:
    proc = run_train(
        ["experiment=debug_pipeline", "pipeline.1.overrides=['stage=qat','stage.init_from=@nothing']"],
        tmp_path,
        data_cache,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "bitcpm: error: pipeline stage 'qat': @nothing does not name an earlier stage"
    ]
