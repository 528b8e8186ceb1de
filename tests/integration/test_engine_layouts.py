"""megatron's engine on CPU/gloo: every (tp, pp, dp) layout trains the single-rank model's numbers.

Each layout runs tests/integration/engine_worker.py under torchrun (a real multi-process gloo job: megatron DDP,
optimizer, distributed optimizer, 1F1B / interleaved schedules, sequence parallel) on the same global batches and
seed, and must reproduce the single-rank losses, validation losses and (QAT) every trit of every ternary weight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("engine_worker.py")
REPO = WORKER.parents[2]
# Shrunk debug model: 4 layers (pp=2 x virtual 2), tp=2-divisible heads and vocab, g128-valid widths at tp=1.
COMMON = [
    "model.num_layers=4",
    "model.hidden_size=128",
    "model.intermediate_size=256",
    "model.dim_model_base=64",
    "model.vocab_size=8192",
    "train.seq_length=32",
    "train.steps=10",
    "tracking=none",
    "hardware.dtype=float32",
    "parallel.global_batch_size=8",
    "parallel.micro_batch_size=2",
    "optim.warmup_steps=2",
]
LAYOUTS = {
    "tp1-pp1-dp2": (2, ["launcher.procs_per_node=2"]),
    "tp1-pp2-dp1": (2, ["parallel.pp=2"]),
    "tp2-pp1-dp1-sp": (2, ["parallel.tp=2", "parallel.sequence_parallel=true"]),
    "tp1-pp2-dp2-distopt": (4, ["parallel.pp=2", "launcher.procs_per_node=4", "parallel.distributed_optimizer=true"]),
    "tp2-pp2-dp1": (4, ["parallel.tp=2", "parallel.pp=2"]),
    "tp1-pp2-vpp2-dp1": (2, ["parallel.pp=2", "parallel.virtual_pp=2"]),
    "tp2-pp1-dp1-sp-recompute-full": (
        2,
        ["parallel.tp=2", "parallel.sequence_parallel=true", "parallel.recompute=full"],
    ),
}


def run_layout(out: Path, nproc: int, overrides: list[str]) -> dict:
    """Run the worker on nproc gloo ranks; returns rank 0's summary (losses, validation, optimizer class)."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out), *COMMON, *overrides]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
        cmd += [str(WORKER), str(out), *COMMON, *overrides]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "losses.json").read_text())


def merged_trits(out: Path) -> dict[str, torch.Tensor]:
    """Full trit tensors by global weight name, reassembled from every rank's tensor-parallel shard."""
    shards: dict[str, list] = {}
    for path in sorted(out.glob("trits_rank*.pt")):
        saved = torch.load(path, weights_only=False)
        for name, entry in saved["trits"].items():
            shards.setdefault(name, []).append((saved["tp_rank"], saved["tp"], entry))
    full = {}
    for name, parts in shards.items():
        parts.sort(key=lambda p: p[0])
        tp, dim, stride = parts[0][1], parts[0][2]["dim"], parts[0][2]["stride"]
        pieces = [p[2]["trits"].chunk(stride, dim=dim) for p in parts]
        full[name] = torch.cat([pieces[r][j] for j in range(stride) for r in range(tp)], dim=dim)
    return full


@pytest.fixture(scope="module")
def single_rank(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_layout(tmp_path_factory.mktemp("single"), 1, ["quant=none"])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_matches_single_rank_losses_and_validation(tmp_path: Path, single_rank: dict, layout: str) -> None:
    nproc, overrides = LAYOUTS[layout]
    got = run_layout(tmp_path, nproc, ["quant=none", *overrides])
    assert len(got["loss"]) == 10
    assert got["loss"] == pytest.approx(single_rank["loss"], rel=1e-5), layout
    # The held-out set is the same sequences at every layout, so validation agrees as training does.
    assert got["val_loss"] == pytest.approx(single_rank["val_loss"], rel=1e-5), layout
    assert got["grad_norm"] == pytest.approx(single_rank["grad_norm"], rel=1e-4), layout
    assert got["dp"] == int(layout.split("-dp")[1][0])
    # Data parallelism turns the distributed optimizer on by default (tp1-pp1-dp2 does not ask for it).
    assert got["distributed_optimizer"] is ("distopt" in layout or got["dp"] > 1)


@pytest.fixture(scope="module")
def single_rank_qat(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("single_qat")
    return run_layout(out, 1, ["quant=ternary_g128"]), merged_trits(out)


@pytest.mark.parametrize(
    "overrides",
    [["parallel.pp=2"], ["launcher.procs_per_node=2", "parallel.distributed_optimizer=true"]],
    ids=["pp2", "dp2-distopt"],
)
def test_qat_trits_equal_single_rank(tmp_path: Path, single_rank_qat, overrides: list[str]) -> None:
    want_summary, want = single_rank_qat
    got_summary = run_layout(tmp_path, 2, ["quant=ternary_g128", *overrides])
    got = merged_trits(tmp_path)
    assert got_summary["loss"] == pytest.approx(want_summary["loss"], rel=1e-5)
    assert sorted(got) == sorted(want) and len(want) == 4 * 4  # qkv, proj, fc1, fc2 in each of 4 layers
    for name in want:
        assert torch.equal(got[name], want[name]), f"{name}: {(got[name] != want[name]).sum()} trits differ"
