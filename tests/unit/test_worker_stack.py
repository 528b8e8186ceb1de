"""A job whose device stack is missing on the node stops at worker start with one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("npu", "hardware.device=npu: torch_npu is not installed"),
        ("cuda", "hardware.device=cuda: torch"),
    ],
)
def test_missing_stack_is_one_line_at_worker_start(device: str, expected: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this node has a CUDA device")
    args = [f"hardware={device}", "tracking=none", f"train.output_root={tmp_path}/out", "data.cache_dir=unused"]
    proc = subprocess.run([sys.executable, "-m", "bitcpm.train", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"bitcpm: error: {expected}")
    (run_dir,) = (tmp_path / "out").iterdir()
    assert (run_dir / "worker_error.txt").read_text().startswith(expected)
    assert not (run_dir / "checkpoints").exists()
