"""Studies that train: parallel local trials, a failing trial, re-runs that skip finished trials, MLflow nesting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.rundir import run_dir_for
from tests.conftest import run_train

pytestmark = pytest.mark.integration

TINY = [
    "model.num_layers=2",
    "train.seq_length=64",
    "train.steps=8",
    "optim.warmup_steps=2",
    "train.eval_interval=0",
    "train.eval_batches=2",
]


def _corrupt_run_dir(overrides: list[str], cwd: Path, data_cache: Path) -> Path:
    """Give one trial a run directory whose 'complete' checkpoint is garbage: its worker fails on resume."""
    job = compose_job(CommandLine(), [*overrides, f"data.cache_dir={data_cache}", f"train.output_root={cwd}/out"])
    step = run_dir_for(job) / "checkpoints" / "step_00000004"
    step.mkdir(parents=True)
    (step / "shard_tp00_pp00.pt").write_text("not a checkpoint")
    (step / "COMPLETE").write_text("")
    return run_dir_for(job)


def test_parallel_trials_a_failure_and_a_rerun_that_skips_finished_trials(tmp_path: Path, data_cache: Path) -> None:
    fixed = ["tracking=none", *TINY, "launcher.max_parallel=2"]
    broken = _corrupt_run_dir([*fixed, "optim.lr=0.0025"], tmp_path, data_cache)
    args = ["-m", *fixed, "optim.lr=1e-2,5e-3,2.5e-3"]
    proc = run_train(args, tmp_path, data_cache, timeout=900)
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "3 trial(s), 2 at a time" in out
    events = re.findall(r"^bitcpm: trial (\d)/3 \(optim\.lr=[0-9.e-]+\) (started|finished|FAILED)", out, re.M)
    assert [e for _, e in events[:2]] == ["started", "started"], out  # two ran at once
    ends = {t: e for t, e in events if e != "started"}
    assert ends == {"1": "finished", "2": "finished", "3": "FAILED"}, out
    assert re.search(r"^bitcpm: trial 3 failed \(exit \d+\): optim\.lr=0\.0025; log .*worker\.log$", out, re.M)
    summary = out.split("summary (validation loss)")[1]
    assert len(re.findall(r"^\s+[12] finished\s+\d+\.\d{4}", summary, re.M)) == 2
    logs = {d: (d / "launch" / "worker.log").read_text() for d in (tmp_path / "out").iterdir() if d.name != "multirun"}
    assert "Traceback" in logs[broken] or "error" in logs[broken].lower()
    assert all((d / "FINISHED").exists() for d in logs if d != broken)

    again = run_train(args, tmp_path, data_cache, timeout=900)
    assert again.returncode == 1
    assert again.stdout.count("finished earlier, skipped") == 2
    assert "1 trial(s), 1 at a time" in again.stdout  # only the failed one is tried again
    for d, text in logs.items():
        if d != broken:
            assert (d / "launch" / "worker.log").read_text() == text, "a finished trial did not run again"
