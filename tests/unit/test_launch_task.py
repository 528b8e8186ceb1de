"""The per-task callable: warning-signal hand-off to the worker, and the requeue decision after it exits."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launchers import slurm_task
from launchers.restarts import read_restarts
from launchers.slurm_task import SignalLog, WorkerTask, _ignore_warning, conclude, wait_for_worker

pytestmark = pytest.mark.quick

# A stand-in worker: slow to install its stop handler (like one still importing megatron), then runs
# until told to stop and exits 75 as bitcpm.worker does after saving.
SLOW_WORKER = textwrap.dedent(
    """
    import signal, sys, time
    time.sleep(1.5)
    stop = []
    signal.signal(signal.SIGUSR2, lambda *a: stop.append(1))
    print("handler installed", flush=True)
    deadline = time.time() + 20
    while not stop and time.time() < deadline:
        time.sleep(0.05)
    sys.exit(75 if stop else 0)
    """
)


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_early_warning_neither_kills_nor_is_lost(tmp_path: Path, restore_signals):
    script = tmp_path / "worker.py"
    script.write_text(SLOW_WORKER)
    signals = SignalLog().install()
    child = subprocess.Popen([sys.executable, str(script)], preexec_fn=_ignore_warning, stdout=subprocess.PIPE)
    signals.child = child
    os.kill(os.getpid(), signal.SIGUSR2)  # Slurm signals the task (and the worker) before it listens
    code = wait_for_worker(child, signals, resend_every_s=0.5)
    assert signals.warned
    assert code == 75, "the worker must survive the early signal and stop on a re-sent one"
    assert b"handler installed" in child.stdout.read()


def _fake_scontrol(tmp_path: Path, monkeypatch, rc: int = 0) -> Path:
    calls = tmp_path / "scontrol.calls"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit {rc}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(slurm_task, "REQUEUE_GRACE_S", 0.2)
    return calls


def _warned() -> SignalLog:
    log = SignalLog()
    log.seen.append(signal.SIGUSR2)
    return log


def test_rank0_requeues_after_the_checkpoint_and_counts_it(tmp_path: Path, monkeypatch):
    calls = _fake_scontrol(tmp_path, monkeypatch)
    task = WorkerTask("w", [], str(tmp_path / "launch"), max_restarts=3)
    env = {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "1"}
    with pytest.raises(SystemExit) as ended:
        conclude(task, 75, _warned(), rank=0, environ=env)
    assert ended.value.code == 75
    assert calls.read_text().split() == ["requeue", "77"]
    record = read_restarts(tmp_path / "launch")
    assert record["count"] == 1 and record["events"][0]["job_id"] == "77"


def test_other_ranks_leave_the_requeue_to_rank0(tmp_path: Path, monkeypatch):
    calls = _fake_scontrol(tmp_path, monkeypatch)
    task = WorkerTask("w", [], str(tmp_path / "launch"))
    assert "rank 0" in conclude(task, 75, _warned(), rank=1, environ={"SLURM_JOB_ID": "77"})
    assert not calls.exists()


def test_restart_cap_stops_requeueing(tmp_path: Path, monkeypatch, capsys):
    calls = _fake_scontrol(tmp_path, monkeypatch)
    task = WorkerTask("w", [], str(tmp_path / "launch"), max_restarts=2)
    with pytest.raises(SystemExit) as ended:
        conclude(task, 75, _warned(), rank=0, environ={"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "2"})
    assert ended.value.code == 75 and not calls.exists()
    assert "launcher.max_restarts=2" in capsys.readouterr().out


def test_failed_requeue_is_reported(tmp_path: Path, monkeypatch, capsys):
    _fake_scontrol(tmp_path, monkeypatch, rc=1)
    task = WorkerTask("w", [], str(tmp_path / "launch"))
    with pytest.raises(SystemExit):
        conclude(task, 75, _warned(), rank=0, environ={"SLURM_JOB_ID": "77"})
    assert "scontrol requeue 77 failed" in capsys.readouterr().out


@pytest.mark.parametrize(("code", "expected"), [(2, 2), (1, 1), (-9, 137)])
def test_failures_end_the_task_with_the_worker_code(tmp_path: Path, code: int, expected: int):
    task = WorkerTask("w", [], str(tmp_path / "launch"))
    with pytest.raises(SystemExit) as ended:
        conclude(task, code, SignalLog(), rank=0, environ={})
    assert ended.value.code == expected


def test_stop_without_warning_is_not_requeued(tmp_path: Path, capsys):
    # SIGTERM is a cancel (or a preemption Slurm requeues itself): stop, report, never requeue.
    log = SignalLog()
    log.seen.append(signal.SIGTERM)
    with pytest.raises(SystemExit) as ended:
        conclude(WorkerTask("w", [], str(tmp_path)), 75, log, rank=0, environ={"SLURM_JOB_ID": "5"})
    assert ended.value.code == 75 and "SIGTERM" in capsys.readouterr().out


def test_finished_worker_returns(tmp_path: Path):
    assert conclude(WorkerTask("w", [], str(tmp_path)), 0, _warned(), rank=0, environ={}) == "finished"
