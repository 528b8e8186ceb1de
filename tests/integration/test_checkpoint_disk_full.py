"""A filesystem that fills during a checkpoint write: one line naming the path and the space needed, the
last complete checkpoint intact, and a rerun (after space is freed) resumes from it. On a real, small tmpfs."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from bitcpm.training.faults import BALLAST
from tests.conftest import only_run_dir, run_train

pytestmark = pytest.mark.integration

# A small model: each checkpoint (weights and two Adam moments, fp32) is about 7 MiB.
BASE = [
    "experiment=smoke",
    "quant=none",
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.intermediate_size=128",
    "model.num_attention_heads=2",
    "model.num_kv_heads=1",
    "train.steps=6",
    "train.save_interval=2",
    "train.keep_checkpoints=1",
    "train.eval_interval=0",
    "tracking=none",
]


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 40 MiB tmpfs (needs root, as in CI containers; skipped where mounting is not allowed)."""
    mount_point = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}): needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_during_checkpoint_write_one_line_then_resume(small_fs: Path, data_cache: Path) -> None:
    # After the free-space check of the step-4 save, a ballast file takes what is left: the write hits ENOSPC.
    full = run_train(BASE, small_fs, data_cache, env={"BITCPM_FAULT": "fill_disk@4"})
    assert full.returncode == 4, full.stdout[-2000:] + full.stderr[-3000:]
    run_dir = only_run_dir(small_fs)
    errors = [ln for ln in full.stderr.splitlines() if ln.startswith("bitcpm: error:")]
    assert len(errors) == 1, full.stderr[-3000:]
    assert f"checkpoint of step 4 does not fit in {run_dir / 'checkpoints'}: it needs " in errors[0]
    assert "MiB" in errors[0] and "last complete checkpoint there is intact" in errors[0]
    assert "Traceback" not in full.stderr
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["fill_disk.ballast", "step_00000002"]
    assert (checkpoints / "step_00000002" / "COMPLETE").exists()

    os.remove(checkpoints / BALLAST)
    rerun = run_train(BASE, small_fs, data_cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "(step 2)" in rerun.stdout and "fresh start" not in rerun.stdout
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_00000006"]


def test_checkpoint_larger_than_the_free_space_is_refused_before_writing(small_fs: Path, data_cache: Path) -> None:
    ballast = small_fs / "ballast"
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    with open(ballast, "wb") as f:  # leave about 4 MiB: less than one checkpoint
        f.truncate(0)
        f.write(b"\0" * (free - (4 << 20)))
    proc = run_train(BASE, small_fs, data_cache)
    assert proc.returncode == 4, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("bitcpm: error:")]
    assert len(errors) == 1 and "checkpoint of step 2 does not fit in" in errors[0], proc.stderr[-3000:]
    assert not any((only_run_dir(small_fs) / "checkpoints").iterdir())  # nothing half-written left behind
