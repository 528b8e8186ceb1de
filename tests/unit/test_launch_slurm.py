"""Slurm launcher pieces that need no cluster: sbatch options, the ranks' environment, sacct parsing, status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launchers import slurm, slurm_state, status
from launchers.request import LaunchRequest, SlurmOptions
from launchers.slurm_env import _expand_locally, distributed_env, master_port_for, thread_env
from launchers.slurm_state import JobRecord, append_records, parse_sacct, read_records

pytestmark = pytest.mark.quick


def _request(tmp_path: Path, **slurm_kw) -> LaunchRequest:
    return LaunchRequest(
        worker_module="bitcpm.worker",
        worker_args=[str(tmp_path / "config.yaml")],
        run_dir=tmp_path,
        nodes=2,
        procs_per_node=8,
        env={"HCCL_CONNECT_TIMEOUT": "1800"},
        setup=["source /opt/cann/set_env.sh"],
        preflight=["launchers.ascend_check"],
        slurm=SlurmOptions(job_name="bitcpm-x", **slurm_kw),
    )


def test_executor_parameters_map_every_option(tmp_path: Path):
    req = _request(
        tmp_path,
        partition="gpu",
        account="proj",
        qos="high",
        time_min=240,
        constraint="h100",
        gpus_per_node=8,
        cpus_per_task=12,
        mem_gb=512,
        sbatch={"exclusive": "", "mail-type": "END"},
        signal_delay_s=300,
    )
    p = slurm.executor_parameters(req, dependencies=["11", "12"])
    assert p["nodes"] == 2 and p["ntasks_per_node"] == 8 and p["time"] == 240 and p["signal_delay_s"] == 300
    assert (p["partition"], p["account"], p["qos"], p["constraint"]) == ("gpu", "proj", "high", "h100")
    assert p["gpus_per_node"] == 8 and p["cpus_per_task"] == 12 and p["mem"] == "512GB"
    assert p["additional_parameters"] == {"requeue": True, "exclusive": True, "mail-type": "END"}
    assert p["dependency"] == "afterok:11:12"
    assert p["setup"][0] == "source /opt/cann/set_env.sh"
    assert "-m launchers.ascend_check || exit 1" in p["setup"][1]
    assert "gres" not in p and "qos" in p


def test_describe_renders_the_sbatch_script(tmp_path: Path):
    pytest.importorskip("submitit")
    text = slurm.describe(_request(tmp_path, gres="npu:8", time_min=30, signal_delay_s=120))
    for line in ("#SBATCH --gres=npu:8", "#SBATCH --ntasks-per-node=8", "#SBATCH --nodes=2", "#SBATCH --requeue"):
        assert line in text
    assert "#SBATCH --signal=USR2@120" in text and "#SBATCH --time=30" in text
    assert "-m bitcpm.worker" in text and "HCCL_CONNECT_TIMEOUT=1800" in text


def test_distributed_env_from_slurm_variables():
    env = {
        "SLURM_PROCID": "9",
        "SLURM_NTASKS": "16",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "nonexistent-host-[07-08]",
        "SLURM_JOB_ID": "4242",
    }
    d = distributed_env(env)
    assert (d["RANK"], d["WORLD_SIZE"], d["LOCAL_RANK"], d["LOCAL_WORLD_SIZE"], d["NODE_RANK"]) == (
        "9",
        "16",
        "1",
        "8",
        "1",
    )
    assert d["MASTER_ADDR"] == "nonexistent-host-07"
    # Every task, and every requeue of the job, derives the same port; a configured one wins.
    assert d["MASTER_PORT"] == str(master_port_for("4242")) == distributed_env(env)["MASTER_PORT"]
    assert distributed_env(env, master_port=29400)["MASTER_PORT"] == "29400"


def test_nodelist_expansion_without_scontrol():
    assert _expand_locally("a[01-03,07],login1") == ["a01", "a02", "a03", "a07", "login1"]
    assert _expand_locally("vm") == ["vm"]


def test_threads_follow_cpus_per_task():
    assert thread_env({"SLURM_CPUS_PER_TASK": "6"}, 8) == {"OMP_NUM_THREADS": "6"}
    assert thread_env({"OMP_NUM_THREADS": "3"}, 8) == {}


def test_sacct_rows_give_latest_state_restarts_and_pending_arrays():
    text = "\n".join(
        [
            "41|REQUEUED|0:0|00:00:50",
            "41|REQUEUED|0:0|00:00:48",
            "41|COMPLETED|0:0|00:00:20",
            "42_0|COMPLETED|0:0|00:00:12",
            "42_1|FAILED|2:0|00:00:03",
            "43_[0-2%2]|PENDING|0:0|00:00:00",
            "44|CANCELLED by 0|0:15|00:00:01",
        ]
    )
    states = parse_sacct(text)
    assert states["41"].state == "COMPLETED" and states["41"].restarts == 2
    assert states["42_1"].state == "FAILED" and states["42_1"].exit_code == "2:0"
    assert {states[f"43_{i}"].state for i in range(3)} == {"PENDING"}
    assert states["44"].state == "CANCELLED" and states["44"].terminal


def test_job_records_accumulate(tmp_path: Path):
    first = JobRecord("7", str(tmp_path), "log7", "t1")
    append_records(tmp_path / "launch", [first])
    append_records(tmp_path / "launch", [JobRecord("9_1", str(tmp_path), "log9", "t2", dependencies=["7"])])
    records = read_records(tmp_path / "launch")
    assert [r.job_id for r in records] == ["7", "9_1"] and records[1].dependencies == ["7"]
    assert json.loads((tmp_path / "launch" / "jobs.json").read_text())["jobs"][0]["log"] == "log7"


def test_status_reports_failed_jobs(tmp_path: Path, monkeypatch, capsys):
    for name, job in (("good", "5_0"), ("bad", "5_1")):
        append_records(tmp_path / name / "launch", [JobRecord(job, str(tmp_path / name), f"{name}.log", "t")])
    sacct = "5_0|COMPLETED|0:0|00:00:10\n5_1|FAILED|2:0|00:00:02\n"

    class Done:
        returncode, stdout, stderr = 0, sacct, ""

    monkeypatch.setattr(slurm_state, "_run", lambda cmd: Done())
    assert status.main(["--all", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "5_0  COMPLETED" in out and "5_1  FAILED" in out and "log of 5_1: bad.log" in out


def test_without_accounting_a_finished_job_is_unknown(monkeypatch):
    class NoAccounting:
        returncode, stdout, stderr = 1, "", "Slurm accounting storage is disabled"

    class Queue:
        returncode, stdout, stderr = 0, "8|RUNNING\n", ""

    monkeypatch.setattr(slurm_state, "_run", lambda cmd: NoAccounting() if cmd[0] == "sacct" else Queue())
    states = slurm_state.query_states(["8", "9"])
    assert states["8"].state == "RUNNING" and states["8"].source == "squeue"
    assert states["9"].state == "UNKNOWN" and states["9"].source == "none"
