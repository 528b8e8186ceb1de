"""Ctrl-C in the terminal during a local 2-rank job: the ranks save, the front end exits 75, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitcpm.training.metrics_log import metric_series
from tests.conftest import only_run_dir

pytestmark = pytest.mark.integration


def test_ctrl_c_to_the_process_group_saves_and_exits_75(tmp_path: Path, data_cache: Path) -> None:
    args = ["experiment=smoke", "parallel=tp2", "tracking=none", "train.steps=400", "train.eval_interval=0"]
    cmd = [
        sys.executable,
        "-m",
        "bitcpm.train",
        *args,
        f"data.cache_dir={data_cache}",
        f"train.output_root={tmp_path}/out",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Its own process group, as a shell gives a foreground job; the terminal's Ctrl-C signals the whole group.
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        runs = list((tmp_path / "out").glob("*/metrics.jsonl")) if (tmp_path / "out").exists() else []
        if runs and len(metric_series(runs[0], "loss")) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 75, err[-3000:]
    for noise in ("Traceback", "SignalException", "ChildFailedError", "KeyboardInterrupt"):
        assert noise not in err, err[-3000:]
    assert "SIGINT received: saved step" in out
    stopped_at = int(out.split("saved step ")[1].split(",")[0])
    checkpoint = only_run_dir(tmp_path) / "checkpoints" / f"step_{stopped_at:08d}"
    assert (checkpoint / "COMPLETE").exists()
    assert (checkpoint / "metadata.json").exists() and any(checkpoint.glob("*.distcp"))  # torch_dist format
