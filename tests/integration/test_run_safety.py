"""Crash at every dangerous point, rerun the same command: resume from the newest complete checkpoint,
bit-identical losses; graceful stop on SIGTERM; NaN policy; checkpoints move between tp sizes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitcpm.training.metrics_log import metric_series
from tests.conftest import only_run_dir, run_train

pytestmark = pytest.mark.integration

BASE = [
    "experiment=smoke",
    "train.steps=8",
    "train.save_interval=2",
    "train.keep_checkpoints=1",
    "train.eval_interval=0",
    "tracking.log_interval=1",
]


def _losses(run_dir: Path) -> dict[int, float]:
    return metric_series(run_dir / "metrics.jsonl", "loss")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> dict[int, float]:
    """Losses of an uninterrupted run."""
    cwd = tmp_path_factory.mktemp("reference")
    proc = run_train(BASE, cwd, data_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _losses(only_run_dir(cwd))
    assert sorted(losses) == list(range(1, 9))
    return losses


@pytest.mark.parametrize(
    ("fault", "resumed_step"),
    [
        ("mid_step@5", 4),  # killed during step 5: the step-4 checkpoint is the newest
        ("shard_write@4", 2),  # killed while the step-4 shard file was half written
        ("before_rename@4", 2),  # step-4 files complete in the staging directory, not yet renamed
        ("before_marker@4", 2),  # renamed into place, but no COMPLETE marker: must be ignored
        ("during_prune", 4),  # step 4 complete, killed while deleting step 2
    ],
)
def test_kill9_then_rerun_resumes_exactly(
    tmp_path: Path, data_cache: Path, reference: dict[int, float], fault: str, resumed_step: int
) -> None:
    crashed = run_train(BASE, tmp_path, data_cache, env={"BITCPM_FAULT": fault})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    rerun = run_train(BASE, tmp_path, data_cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"(step {resumed_step})" in rerun.stdout, rerun.stdout
    assert "fresh start" not in rerun.stdout
    run_dir = only_run_dir(tmp_path)
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["step_00000008"], ckpts  # partial ones cleaned, keep_last=1
    losses = _losses(run_dir)
    assert losses == reference  # bit-identical to the uninterrupted run


def test_sigterm_stops_gracefully_and_rerun_finishes(tmp_path: Path, data_cache: Path) -> None:
    # 80 steps: the signal lands a few steps in (polled every 0.2 s), and the rerun trains only the rest.
    args = [*BASE, "train.steps=80", "train.save_interval=0"]
    cmd = [
        sys.executable,
        "-m",
        "bitcpm.train",
        *args,
        f"data.cache_dir={data_cache}",
        f"train.output_root={tmp_path}/out",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        runs = list((tmp_path / "out").glob("*/metrics.jsonl")) if (tmp_path / "out").exists() else []
        if runs and len(metric_series(runs[0], "loss")) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    assert "SIGTERM received: saved step" in out
    run_dir = only_run_dir(tmp_path)
    stopped_at = int(out.split("saved step ")[1].split(",")[0])
    assert (run_dir / "checkpoints" / f"step_{stopped_at:08d}" / "COMPLETE").exists()
    assert 3 <= stopped_at < 80
    rerun = run_train(args, tmp_path, data_cache, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"(step {stopped_at})" in rerun.stdout


def test_nan_skip_policy_skips_and_finishes(tmp_path: Path, data_cache: Path, reference: dict[int, float]) -> None:
    proc = run_train(BASE, tmp_path, data_cache, env={"BITCPM_FAULT": "nan_loss@3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "non-finite loss or gradient at step 4" in proc.stdout
    run_dir = only_run_dir(tmp_path)
    assert metric_series(run_dir / "metrics.jsonl", "nonfinite_steps") == {4: 1.0}
    losses = _losses(run_dir)
    assert losses[3] == reference[3]  # before the bad batch nothing changed
    assert losses[5] != reference[5]  # the skipped update shows afterwards


def test_nan_stop_policy_saves_last_good_state(tmp_path: Path, data_cache: Path) -> None:
    proc = run_train([*BASE, "train.nan_policy=stop"], tmp_path, data_cache, env={"BITCPM_FAULT": "nan_loss@5"})
    assert proc.returncode == 3, proc.stderr[-3000:]
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("bitcpm: error:")]
    assert len(error_lines) == 1 and "saved the last good state at step 5" in error_lines[0]
    assert "Traceback" not in proc.stderr
    assert (only_run_dir(tmp_path) / "checkpoints" / "step_00000005" / "COMPLETE").exists()


@pytest.mark.parametrize(("first", "second"), [("tp2", "single"), ("single", "tp2")])
def test_weights_move_between_tp_sizes(tmp_path: Path, data_cache: Path, first: str, second: str) -> None:
    args = [*BASE, "train.steps=4", "quant=ternary_g64"]
    trained = run_train([*args, f"parallel={first}"], tmp_path, data_cache)
    assert trained.returncode == 0, trained.stderr[-3000:]
    final = float(trained.stdout.split("final validation loss ")[1].split()[0])
    reloaded = run_train([*args, f"parallel={second}"], tmp_path, data_cache)
    assert reloaded.returncode == 0, reloaded.stderr[-3000:]
    assert "run already complete (4/4 steps)" in reloaded.stdout
    again = float(reloaded.stdout.split("validation loss ")[-1].split()[0])
    assert again == pytest.approx(final, abs=2e-4)


def test_resume_at_another_tp_continues_training(tmp_path: Path, data_cache: Path) -> None:
    # Without QAT: ternary rounding turns tp=2's float-order differences into trit flips that grow over steps
    # (~2e-3 by step 7 here), which says nothing about the checkpoint. Exact layout checks: test_checkpoint_layouts.
    args = [*BASE, "quant=none"]
    (tmp_path / "reference").mkdir()
    single = run_train([*args, "parallel=single"], tmp_path / "reference", data_cache)
    assert single.returncode == 0, single.stderr[-3000:]
    reference = _losses(only_run_dir(tmp_path / "reference"))
    crashed = run_train([*args, "parallel=tp2"], tmp_path, data_cache, env={"BITCPM_FAULT": "mid_step@5"})
    assert crashed.returncode != 0
    rerun = run_train([*args, "parallel=single"], tmp_path, data_cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "(step 4)" in rerun.stdout
    losses = _losses(only_run_dir(tmp_path))
    for step in range(1, 9):  # optimizer moments were resharded too: the run continues as at tp=1
        assert losses[step] == pytest.approx(reference[step], abs=1e-4), (step, losses, reference)


def test_crash_before_first_checkpoint_says_so(tmp_path: Path, data_cache: Path) -> None:
    crashed = run_train(BASE, tmp_path, data_cache, env={"BITCPM_FAULT": "before_marker@2"})
    assert crashed.returncode == -signal.SIGKILL
    rerun = run_train(BASE, tmp_path, data_cache)
    assert rerun.returncode == 0
    assert "ignoring incomplete checkpoint(s)" in rerun.stdout
    assert "no complete checkpoint" in rerun.stdout and "starting from step 0" in rerun.stdout
    assert os.path.exists(only_run_dir(tmp_path) / "checkpoints" / "step_00000008" / "COMPLETE")
