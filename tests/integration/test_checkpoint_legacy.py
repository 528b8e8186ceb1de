"""Checkpoints of earlier bitcpm versions (one torch file per tp rank): one line says how to convert them,
the converter makes them resumable at another layout, and training continues exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, only_run_dir, run_module, run_train

pytestmark = pytest.mark.integration

WORKER = REPO / "tests" / "integration" / "legacy_ckpt_worker.py"
BASE = ["experiment=smoke", "train.steps=4", "train.save_interval=2", "train.eval_interval=0", "tracking=none"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _worker(args: list[str], nproc: int, port: int) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={port}"]
    cmd = [*launcher, str(WORKER), *args] if nproc > 1 else [sys.executable, str(WORKER), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_legacy_checkpoint_one_line_then_converted_resumes_exactly(tmp_path: Path, data_cache: Path) -> None:
    first = run_train(BASE, tmp_path, data_cache, env={"BITCPM_FAULT": "mid_step@3"})  # dies after saving step 2
    assert first.returncode == -9, first.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    # Replace the run's checkpoint by one in the old format, written at tp=2, and note how training goes on.
    _worker(["write", str(run_dir), "2", "2", str(tmp_path / "reference.json")], nproc=2, port=29741)
    old = run_dir / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in old.iterdir()) == ["COMPLETE", "shard_tp00_pp00.pt", "shard_tp01_pp00.pt"]

    refused = run_train(BASE, tmp_path, data_cache)
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("bitcpm: error:")]
    assert len(errors) == 1 and f"python -m bitcpm.training.convert_checkpoint {old}" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr and "fresh start" not in refused.stdout

    converted = run_module("bitcpm.training.convert_checkpoint", [str(old)], REPO, env=_env())
    assert converted.returncode == 0, converted.stderr[-3000:]
    assert (old / "COMPLETE").exists() and (old / "metadata.json").exists()
    assert (run_dir / "checkpoints" / "legacy_step_00000002" / "shard_tp01_pp00.pt").exists()

    _worker(["resume", str(run_dir), "0", "2", str(tmp_path / "resumed.json")], nproc=1, port=29742)
    reference = json.loads((tmp_path / "reference.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert sorted(resumed) == ["3", "4"]
    for step in resumed:  # weights and AdamW moments merged from tp=2 into tp=1: training goes on as before
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5), (step, resumed, reference)

    rerun = run_train(BASE, tmp_path, data_cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "(step 2)" in rerun.stdout


def test_converter_refuses_what_it_cannot_convert(tmp_path: Path) -> None:
    (tmp_path / "step_00000002").mkdir()
    proc = run_module("bitcpm.training.convert_checkpoint", [str(tmp_path / "step_00000002")], REPO, env=_env())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "python -m bitcpm.training.convert_checkpoint: error: argument checkpoints: "
        f"{tmp_path / 'step_00000002'}: not a complete checkpoint (no COMPLETE marker)"
    ]
