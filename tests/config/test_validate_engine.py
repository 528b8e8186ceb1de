"""Pipeline and engine rules: each class of bad layout is refused with one line naming the keys (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bitcpm.config.parallel import derive_layout
from bitcpm.frontend.compose import CommandLine, compose_job
from tests.support.config_errors import config_error

pytestmark = pytest.mark.quick

PP = ["parallel.micro_batch_size=1", "parallel.global_batch_size=8"]  # 8 micro-batches per step at dp=1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([*PP, "parallel.pp=3"], "model.num_layers=4 must be divisible by parallel.pp x parallel.virtual_pp=3x1=3"),
        ([*PP, "parallel.pp=2", "parallel.virtual_pp=4"], "parallel.pp x parallel.virtual_pp=2x4=8"),
        ([*PP, "parallel.virtual_pp=2"], "parallel.virtual_pp=2 needs parallel.pp > 1"),
        ([*PP, "parallel.virtual_pp=0"], "parallel.virtual_pp=0: expected a value >= 1"),
        (["parallel.pp=2", "parallel.micro_batch_size=8"], "parallel.pp=2 needs at least pp micro-batches per step"),
        (
            ["parallel.pp=4", "parallel.virtual_pp=1", "parallel.micro_batch_size=4", "parallel.global_batch_size=12"],
            "parallel.pp=4 needs at least pp micro-batches per step: parallel.global_batch_size=12",
        ),
        (
            ["parallel.pp=4", "model.num_layers=8", "parallel.virtual_pp=2", "parallel.micro_batch_size=1",
             "parallel.global_batch_size=6"],
            "interleaved 1F1B needs micro-batches per step (6) divisible by parallel.pp=4",
        ),
        (
            ["parallel.pp=2", "model.num_layers=4", "parallel.virtual_pp=2", "parallel.micro_batch_size=1",
             "parallel.global_batch_size=5"],
            "interleaved 1F1B needs micro-batches per step (5) divisible by parallel.pp=2",
        ),
        (["parallel.bucket_size_mb=0"], "parallel.bucket_size_mb=0"),
        (["parallel.overlap_param_gather=true"], "parallel.overlap_param_gather=true needs the distributed optimizer"),
        (
            ["parallel.overlap_param_gather=true", "launcher.procs_per_node=2", "parallel.distributed_optimizer=false",
             "parallel.global_batch_size=16"],
            "parallel.distributed_optimizer=False, dp=2",
        ),
        (["parallel.cp=2"], "parallel.cp=2: context parallelism is not available on hardware.device=cpu"),
        (["parallel.cp=2", "hardware=h100"], "context parallelism is not available on hardware.device=cuda"),
    ],
)  # fmt: skip
def test_bad_layouts_are_one_line_errors(overrides: list[str], expected: str) -> None:
    assert expected in config_error(overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        [*PP, "parallel.pp=2"],
        [*PP, "parallel.pp=4"],
        [*PP, "parallel.pp=2", "parallel.virtual_pp=2"],
        ["parallel=tp2", "parallel.sequence_parallel=true"],
        ["parallel.recompute=selective"],
        ["launcher.procs_per_node=2", "parallel.global_batch_size=16", "parallel.overlap_param_gather=true"],
    ],
)
def test_layouts_the_engine_runs_on_cpu_are_accepted(overrides: list[str]) -> None:
    compose_job(CommandLine(), overrides)


def test_derived_sizes_are_computed_once() -> None:
    job = compose_job(CommandLine(), ["launcher.procs_per_node=4", "parallel.pp=2", *PP])
    lay = derive_layout(job.parallel, 4)
    assert (lay.dp, lay.micro_batches_per_step, lay.distributed_optimizer) == (2, 4, True)
    single = derive_layout(job.parallel, 2)
    assert (single.dp, single.micro_batches_per_step, single.distributed_optimizer) == (1, 8, False)


def test_cli_exits_2_on_a_bad_pipeline() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bitcpm.train", "parallel.pp=3", "dry_run=true"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "parallel.pp" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
