"""The callable submitit runs on every Slurm task: one worker rank as a child process, requeued after its checkpoint.

Why not let submitit handle the warning signal: its USR2 handler requeues the job (or fails it, if it looks timed
out) the moment the signal arrives — before the worker has saved anything. So each task takes USR2/TERM over
from submitit, starts the worker with USR2 ignored until the worker installs its own stop handler (an early
signal must not kill it mid-import), keeps re-sending the warning until the worker exits, and only when the
worker reports a complete checkpoint (exit 75) does global rank 0 `scontrol requeue` the job. Slurm never
requeues a job that already timed out, so signal_delay_s must cover a step plus a checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from launchers.restarts import RESTARTS_ENV, read_restarts, record_restart
from launchers.slurm_env import distributed_env, thread_env

EXIT_BAD_CONFIG = 2
EXIT_PREEMPTED = 75  # the worker's "stopped after a complete checkpoint; rerun to resume"
WARNING_SIGNAL = signal.SIGUSR2  # what sbatch --signal sends (submitit's convention)
RESEND_EVERY_S = 5.0
REQUEUE_GRACE_S = 120.0


@dataclass
class WorkerTask:
    """Pickled by submitit and called once on every task of the job."""

    worker_module: str
    worker_args: list[str]
    launch_dir: str
    env: dict[str, str] = field(default_factory=dict)
    max_restarts: int = 3
    master_port: int | None = None

    def __call__(self) -> str:
        return run_task(self, os.environ)


class SignalLog:
    """Records the signals this task received and passes them on to the worker."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.child: subprocess.Popen | None = None

    def install(self) -> SignalLog:
        """Replace submitit's handlers for the warning, TERM and INT."""
        for sig in (WARNING_SIGNAL, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.seen.append(signum)
        self.forward(signum)

    def forward(self, signum: int) -> None:
        """Send a signal to the worker if it is still running."""
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    @property
    def warned(self) -> bool:
        """The time-limit / preemption warning arrived."""
        return WARNING_SIGNAL in self.seen


def _ignore_warning() -> None:
    # Runs in the child between fork and exec: an ignored signal stays ignored across exec, until the
    # worker's own handler takes over; before that, a warning would kill it with nothing saved.
    signal.signal(WARNING_SIGNAL, signal.SIG_IGN)


def wait_for_worker(child: subprocess.Popen, signals: SignalLog, resend_every_s: float = RESEND_EVERY_S) -> int:
    """Wait for the worker; after a warning, re-send it until the worker exits (it may not have listened yet)."""
    last = 0.0
    while True:
        try:
            return child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if signals.warned and time.monotonic() - last >= resend_every_s:
            signals.forward(WARNING_SIGNAL)
            last = time.monotonic()


def run_task(task: WorkerTask, environ: Mapping[str, str]) -> str:
    """Run one rank; requeue, report or fail according to how the worker ended."""
    signals = SignalLog().install()
    dist = distributed_env(environ, task.master_port)
    restarts = read_restarts(Path(task.launch_dir))["count"]
    env = {
        **environ,
        **dist,
        **thread_env(environ, int(dist["LOCAL_WORLD_SIZE"])),
        **task.env,
        RESTARTS_ENV: str(restarts),
    }
    cmd = [sys.executable, "-m", task.worker_module, *task.worker_args]
    print(
        f"bitcpm: rank {dist['RANK']}/{dist['WORLD_SIZE']} on {socket.gethostname()} "
        f"(master {dist['MASTER_ADDR']}:{dist['MASTER_PORT']}, restarts so far {restarts}): {' '.join(cmd)}",
        flush=True,
    )
    signals.child = subprocess.Popen(cmd, env=env, preexec_fn=_ignore_warning)
    code = wait_for_worker(signals.child, signals)
    return conclude(task, code, signals, int(dist["RANK"]), environ)


def conclude(task: WorkerTask, code: int, signals: SignalLog, rank: int, environ: Mapping[str, str]) -> str:
    """Map the worker's exit code to the task's outcome (a return value, a requeue, or a non-zero exit)."""
    if code == 0:
        return "finished"
    stopped = code == EXIT_PREEMPTED or code < 0
    if stopped and signals.warned:
        if rank != 0:
            return "stopped; rank 0 requeues the job"
        requeue(task, environ, signals, code)
    if code == EXIT_PREEMPTED:
        names = ", ".join(signal.Signals(s).name for s in signals.seen) or "a signal"
        print(f"bitcpm: worker stopped by {names} after saving a checkpoint; resubmit to resume", flush=True)
    elif code == EXIT_BAD_CONFIG:
        print("bitcpm: worker exited 2: bad configuration or input (see its error above)", flush=True)
    else:
        print(f"bitcpm: worker exited with {code}", flush=True)
    raise SystemExit(code if code > 0 else 128 - code)


def requeue(task: WorkerTask, environ: Mapping[str, str], signals: SignalLog, code: int) -> None:
    """Put the job back in the queue (bounded by max_restarts), then wait for Slurm to end this attempt."""
    job_id = environ.get("SLURM_JOB_ID", "")
    done = int(environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if done >= task.max_restarts:
        print(
            f"bitcpm: not requeueing job {job_id}: {done} restarts reached launcher.max_restarts="
            f"{task.max_restarts}; the checkpoint is complete, resubmit to continue",
            flush=True,
        )
        raise SystemExit(EXIT_PREEMPTED)
    saved = "after saving a checkpoint" if code == EXIT_PREEMPTED else f"worker ended with {code} before saving"
    count = record_restart(Path(task.launch_dir), job_id, f"{WARNING_SIGNAL.name}, {saved}")
    print(f"bitcpm: time limit / preemption warning: {saved}; requeueing job {job_id} (restart {count})", flush=True)
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if result.returncode:
        # E.g. the time limit struck first: Slurm does not requeue a timed-out job (raise signal_delay_s).
        print(f"bitcpm: scontrol requeue {job_id} failed: {result.stderr.strip()}", flush=True)
        raise SystemExit(EXIT_PREEMPTED)
    # Slurm now ends this attempt (TERM, then KILL); leave on TERM rather than report a result.
    deadline = time.monotonic() + REQUEUE_GRACE_S
    while signal.SIGTERM not in signals.seen and time.monotonic() < deadline:
        time.sleep(0.5)
    raise SystemExit(EXIT_PREEMPTED)
