"""Checkpoints move between parallel layouts: saved at (tp=2, pp=1), resumed at (tp=1, pp=2) and at dp=2
with the distributed optimizer (and back), training continues as if never interrupted; Adam moments move too.

fp32 on CPU over gloo, megatron's DDP, optimizer and schedules, a tiny MiniCPM (dist_ckpt_worker.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

WORKER = REPO / "tests" / "integration" / "dist_ckpt_worker.py"
STEPS, SAVED_AT = 6, 3
_PORTS = iter(range(29761, 29800))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _worker(*args: str | Path, out: Path) -> dict[int, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={next(_PORTS)}"]
    proc = subprocess.run(
        [*cmd, str(WORKER), *map(str, args), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        env=_env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    return {int(k): v for k, v in json.loads(out.read_text())["losses"].items()}


@pytest.fixture(scope="module")
def tp2_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, float]]:
    """An uninterrupted tp=2 run that also saved at step 3: its losses are the reference."""
    root = tmp_path_factory.mktemp("tp2")
    losses = _worker(
        "--tp", 2, "--steps", STEPS, "--save-every", SAVED_AT, "--run-dir", root / "run", out=root / "o.json"
    )
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert (root / "run" / "checkpoints" / "step_00000003" / "COMPLETE").exists()
    return root / "run", losses


def _from_step3(tp2_run: tuple[Path, dict[int, float]], target: Path) -> Path:
    """A copy of the tp=2 run directory whose newest checkpoint is step 3."""
    shutil.copytree(tp2_run[0], target)
    shutil.rmtree(target / "checkpoints" / "step_00000006")
    return target


def _assert_continues(losses: dict[int, float], reference: dict[int, float]) -> None:
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in range(SAVED_AT + 1, STEPS + 1):
        assert losses[step] == pytest.approx(reference[step], rel=1e-5), (step, losses, reference)


def _plain_tensors_equal(a: Path, b: Path) -> list[str]:
    """Keys whose tensors differ between two checkpoints (only keys both hold), via megatron's plain loader."""
    script = (
        "import sys, json, torch, torch.distributed as d\n"
        "d.init_process_group('gloo', store=d.HashStore(), rank=0, world_size=1)\n"
        "from megatron.core import dist_checkpointing as dc\n"
        "a, b = dc.load_plain_tensors(sys.argv[1]), dc.load_plain_tensors(sys.argv[2])\n"
        "keys = sorted(k for k in a.keys() & b.keys() if isinstance(a[k], torch.Tensor))\n"
        "print(json.dumps({'keys': keys, 'diff': [k for k in keys if not torch.equal(a[k], b[k])]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(a), str(b)], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_resume_at_pp2(tmp_path: Path, tp2_run: tuple[Path, dict[int, float]]) -> None:
    run = _from_step3(tp2_run, tmp_path / "run")
    losses = _worker("--pp", 2, "--steps", STEPS, "--resume", "--run-dir", run, out=tmp_path / "o.json")
    _assert_continues(losses, tp2_run[1])


def test_resume_at_dp2_distributed_optimizer_and_back(tmp_path: Path, tp2_run: tuple[Path, dict[int, float]]) -> None:
    run = _from_step3(tp2_run, tmp_path / "run")
    resaved = tmp_path / "resaved"
    losses = _worker(
        "--dist-opt", "--steps", STEPS, "--resume", "--resave-to", resaved, "--run-dir", run, out=tmp_path / "o.json"
    )
    _assert_continues(losses, tp2_run[1])

    # The state the distributed optimizer loaded, saved again at dp=2, is the tp=2 state exactly.
    saved = tp2_run[0] / "checkpoints" / "step_00000003"
    again = resaved / "checkpoints" / "step_00000003"
    compared = _plain_tensors_equal(saved, again)
    moments = [k for k in compared["keys"] if k.startswith(("optimizer.state.exp_avg.", "optimizer.state.exp_avg_sq."))]
    assert len(moments) >= 2 * 8 and "embedding.word_embeddings.weight" in compared["keys"], compared["keys"]
    assert compared["diff"] == []

    # And the distributed optimizer's checkpoint (it stores main params too) resumes at tp=2 without it.
    back = _worker("--tp", 2, "--steps", STEPS, "--resume", "--run-dir", resaved, out=tmp_path / "back.json")
    assert {k: v for k, v in back.items() if k > SAVED_AT} == pytest.approx(
        {k: v for k, v in tp2_run[1].items() if k > SAVED_AT}, rel=1e-5
    )
