"""How many trials of a study run at once, and what each slot gets (threads, GPUs, the Slurm %N throttle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.submission import request_for
from launchers import local
from launchers.slurm import executor_parameters

pytestmark = pytest.mark.quick


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n: int) -> None:
        monkeypatch.setattr(local.os, "cpu_count", lambda: n)

    return set_cores


def test_cpu_default_is_one_trial_per_core(cores, monkeypatch) -> None:
    cores(8)
    slots = local.trial_slots(None, None, procs_per_trial=1, gpus=False, trials=20)
    assert slots.parallel == 8 and {e["OMP_NUM_THREADS"] for e in slots.envs} == {"1"}
    assert all("CUDA_VISIBLE_DEVICES" not in e for e in slots.envs)


def test_threads_per_trial_and_ranks_divide_the_cores(cores) -> None:
    cores(16)
    assert local.trial_slots(None, 4, procs_per_trial=1, gpus=False, trials=20).parallel == 4
    two_ranks = local.trial_slots(None, None, procs_per_trial=2, gpus=False, trials=20)
    assert two_ranks.parallel == 8 and two_ranks.envs[0]["OMP_NUM_THREADS"] == "1"
    given = local.trial_slots(2, None, procs_per_trial=1, gpus=False, trials=20)
    assert given.parallel == 2 and given.envs[0]["OMP_NUM_THREADS"] == "8"  # the cores shared by 2 trials


def test_never_more_slots_than_trials(cores) -> None:
    cores(64)
    assert local.trial_slots(None, None, 1, False, trials=3).parallel == 3
    assert local.trial_slots(10, None, 1, False, trials=1).parallel == 1


def test_gpu_trials_get_their_own_devices(cores, monkeypatch) -> None:
    cores(32)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5")
    one = local.trial_slots(None, None, procs_per_trial=1, gpus=True, trials=10)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in one.envs] == ["0", "1", "2", "3", "4", "5"]
    two = local.trial_slots(None, None, procs_per_trial=2, gpus=True, trials=10)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in two.envs] == ["0,1", "2,3", "4,5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local.trial_slots(None, None, 1, True, trials=4).parallel == 4  # no GPU visible: by cores


def test_slurm_array_throttle_is_launcher_max_parallel(tmp_path: Path) -> None:
    job = compose_job(CommandLine(), ["launcher=slurm", "launcher.max_parallel=3"])
    params = executor_parameters(request_for(job, tmp_path, "bitcpm.worker"))
    assert params["array_parallelism"] == 3
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="true", folder=tmp_path, map_count=8, **params)
    assert "#SBATCH --array=0-7%3" in script
    unthrottled = executor_parameters(request_for(compose_job(CommandLine(), ["launcher=slurm"]), tmp_path, "w"))
    assert "array_parallelism" not in unthrottled
