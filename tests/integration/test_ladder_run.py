"""The scaling ladder end to end on a tiny family (`python -m bitcpm.windtunnel.ladder_acceptance --smoke`): the ladder
trained, a prediction written as a target experiment, the target trained with its actual loss beside the prediction,
the verdict, and the ladder once more, which trains nothing. The target sits at a ladder width and budget, so its plain
WSD run must end at exactly the loss of that width's decay branch (stable run + branch = one run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.rundir import run_dir_for
from bitcpm.training.metrics_log import read_metrics
from bitcpm.windtunnel.ladder_acceptance import EXPERIMENT, SMOKE_FAMILY
from tests.conftest import run_module

pytestmark = pytest.mark.integration


def test_ladder_prediction_target_and_a_cached_rerun(tmp_path: Path, data_cache: Path) -> None:
    args = ["--smoke", "--root", str(tmp_path), "--parallel", "1", f"data.cache_dir={data_cache}"]
    proc = run_module("bitcpm.windtunnel.ladder_acceptance", args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "ladder acceptance: 8 of 8 runs to train" in out
    assert "ladder acceptance: rerun of the ladder: ladder acceptance: 0 of 8 runs to train" in out
    assert re.search(r"^none: predicted [\d.]+ \[[\d.]+, [\d.]+\], actual [\d.]+ \([+-][\d.]+%\)", out, re.M), out

    points = json.loads((tmp_path / "runs" / "ladders" / "acceptance" / "points.json").read_text())["points"]
    assert sorted((p["width"], p["steps"]) for p in points) == [(w, s) for w in (32, 64) for s in (5, 10, 15)]
    branch = next(p for p in points if (p["width"], p["steps"]) == (64, 15))

    common = [f"train.output_root={tmp_path / 'runs'}", *SMOKE_FAMILY, f"data.cache_dir={data_cache}"]
    job = compose_job(CommandLine(config_dirs=[str(tmp_path / "conf")]), [f"experiment={EXPERIMENT}", *common])
    assert (job.stage.init_from, job.train.steps) == (None, 15)
    records = read_metrics(run_dir_for(job) / "metrics.jsonl")
    final = [r["val_loss"] for r in records if r.get("step") == 15 and "val_loss" in r]
    assert final == [branch["loss"]]  # the plain run of 15 steps and the branch at step 12 end alike
    logged = next(r for r in records if "prediction_error" in r)
    assert logged["prediction_error"] == pytest.approx(final[0] / logged["predicted_loss"] - 1)
