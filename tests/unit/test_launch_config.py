"""Launcher presets compose, their rules give one-line errors, and a multirun reaches the launcher as one batch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import launchers.slurm
from bitcpm import train
from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.submission import request_for

pytestmark = pytest.mark.quick


def _job(*overrides: str):
    return compose_job(CommandLine(), list(overrides))


def test_slurm_preset_composes_into_a_request(tmp_path: Path):
    job = _job(
        "launcher=slurm",
        "hardware=h100",
        "launcher.procs_per_node=8",
        "parallel.global_batch_size=64",
        "launcher.partition=gpu",
        "launcher.time_min=30",
        "+launcher.sbatch.exclusive=''",
    )
    req = request_for(job, tmp_path, "bitcpm.worker")
    assert req.procs_per_node == 8 and req.world_size == 8
    assert req.slurm is not None and req.slurm.gpus_per_node == 8 and req.slurm.partition == "gpu"
    assert req.slurm.sbatch == {"exclusive": ""} and req.slurm.time_min == 30 and req.slurm.wait
    assert req.worker_args == [str(tmp_path / "config.yaml")]


def test_cpu_ranks_ask_for_no_gpus(tmp_path: Path):
    req = request_for(_job("launcher=slurm", "parallel=tp2"), tmp_path, "bitcpm.worker")
    assert req.slurm.gpus_per_node is None and req.slurm.gres is None and req.procs_per_node == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["launcher.nodes=2", "parallel.micro_batch_size=1"], "launcher=local runs on this machine"),
        (["launcher=slurm", "launcher.time_min=1", "launcher.signal_delay_s=60"], "below launcher.time_min"),
        (["launcher=slurm", "launcher.max_restarts=-1"], "launcher.max_restarts=-1"),
        (["launcher=slurm", "train.stop_signals=[SIGTERM]"], "keep SIGUSR2 in train.stop_signals"),
        (["launcher=ascend", "hardware=npu", "parallel.micro_batch_size=1", "launcher.scheduler=k8s"], "scheduler"),
        (["launcher=local", "launcher.name=pbs"], "launcher.name=pbs: expected one of local, slurm, ascend"),
    ],
)
def test_launcher_rules(overrides: list[str], message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _job(*overrides)


def test_multirun_is_one_array_submission(tmp_path: Path, monkeypatch, capsys):
    calls: list[list] = []
    monkeypatch.setattr(launchers.slurm, "launch_many", lambda reqs: calls.append(reqs) or 0)
    monkeypatch.chdir(tmp_path)
    argv = ["-m", "launcher=slurm", "experiment=smoke", "optim.lr=1e-2,5e-3", f"train.output_root={tmp_path}/out"]
    monkeypatch.setattr("sys.argv", ["bitcpm.train", *argv])
    assert train.main(argv) == 0
    assert len(calls) == 1 and len(calls[0]) == 2
    run_dirs = {r.run_dir for r in calls[0]}
    assert len(run_dirs) == 2 and all((d / "config.yaml").exists() for d in run_dirs)
    assert capsys.readouterr().out.count("launch     slurm") == 2  # every member's plan is shown
