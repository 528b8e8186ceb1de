"""The plan's bytes for weights, gradients and optimizer state against what megatron-core allocates on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.plan import make_plan
from bitcpm.plan.memory import MemoryEstimate, estimate_memory, stage_memory
from tests.support.megatron_memory import build_and_count

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]
DEBUG = ["model=debug", "parallel.micro_batch_size=1", "parallel.global_batch_size=4", "train.seq_length=32"]
KINDS = ("weights", "grads", "main_weights", "optimizer")


def _job(*overrides: str):
    return compose_job(CommandLine(), [*DEBUG, *overrides])


def _assert_matches(planned: MemoryEstimate, actual: dict[str, int]) -> None:
    for kind in KINDS:
        want = getattr(planned, kind)
        assert actual[kind] == pytest.approx(want, rel=0.05, abs=0), (kind, actual, planned)
    assert sum(actual[k] for k in KINDS) > 0


@pytest.mark.parametrize(
    "overrides",
    [
        ["hardware.dtype=float32", "quant=none"],  # FP32Optimizer: the weights are the main weights
        ["hardware.dtype=bfloat16", "quant=none"],  # Float16OptimizerWithFloat16Params: fp32 main copies
        ["hardware.dtype=bfloat16", "quant=ternary_g128"],  # QAT adds no parameters
        ["hardware.dtype=bfloat16", "quant=none", "parallel.distributed_optimizer=true"],  # DDP parameter buffer
    ],
    ids=["fp32", "bf16", "bf16-qat", "bf16-distopt-dp1"],
)
def test_single_rank_plan_matches_megatron(dist_cpu, overrides: list[str]):
    job = _job(*overrides)
    _assert_matches(estimate_memory(job), build_and_count(job, 1))


@pytest.mark.integration  # two gloo ranks under torchrun
@pytest.mark.parametrize(
    "layout",
    [["parallel.distributed_optimizer=null"], ["parallel.pp=2"]],
    ids=["dp2-distopt", "pp2-tied-embedding"],
)
def test_two_ranks_match_megatron(tmp_path: Path, layout: list[str]):
    overrides = [*DEBUG, "hardware.dtype=bfloat16", "quant=none", "launcher.procs_per_node=2", *layout]
    out = tmp_path / "counts.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with socket.socket() as probe:  # a free port: other test sessions may run torchrun beside this one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={port}"]
    worker = str(REPO / "tests" / "integration" / "plan_memory_worker.py")
    proc = subprocess.run([*cmd, worker, str(out), *overrides], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = compose_job(CommandLine(), overrides)
    counts = json.loads(out.read_text())
    for placement, rank_counts in zip(make_plan(job).layout, counts, strict=True):
        _assert_matches(stage_memory(job, placement.pp), rank_counts)
    unsharded = estimate_memory(_job("hardware.dtype=bfloat16", "quant=none"))
    if job.parallel.pp == 1:  # dp=2: the plan shards main weights and Adam state in two
        assert estimate_memory(job).optimizer == pytest.approx(unsharded.optimizer / 2)
    else:  # pp=2: the first stage holds the embedding, the last its tied copy, each half the layers
        assert counts[0]["weights"] + counts[1]["weights"] > unsharded.weights
