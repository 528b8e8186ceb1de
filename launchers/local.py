"""Local launcher: world size 1 in this process; N ranks through torch.distributed's elastic launcher.

Several trials of a study (`run_trials`) run as worker subprocesses, up to `parallel` at once, each in a
slot of its own: its share of the cores (OMP_NUM_THREADS) or its own GPUs (CUDA_VISIBLE_DEVICES). A trial
is a list of requests run in order (a pipeline); one trial failing does not stop the others.
"""

from __future__ import annotations

import importlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from launchers.capabilities import Capabilities
from launchers.request import LaunchRequest

# One node; a study's trials run here in parallel slots (trial_slots, run_trials, trial_log below).
CAPABILITIES = Capabilities(parallel_trials=True)


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(req: LaunchRequest, port: int) -> list[str]:
    """The torchrun command line for a single-node multi-rank job."""
    return [
        sys.executable,
        "-m",
        "launchers.elastic",  # torchrun's agent, keeping the ranks' exit codes (see launchers/elastic.py)
        "--nnodes=1",
        f"--nproc-per-node={req.procs_per_node}",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "-m",
        req.worker_module,
        *req.worker_args,
    ]


def _thread_env(procs: int) -> dict[str, str]:
    # Ranks share the machine's cores; without a cap each rank would spawn a thread per core.
    cores = os.cpu_count() or 1
    return {"OMP_NUM_THREADS": str(max(1, cores // procs))}


def launch(req: LaunchRequest) -> int:
    """Run the job to completion; returns its exit code."""
    if req.nodes != 1:
        raise ValueError(f"launcher.nodes={req.nodes}: the local launcher runs on one node")
    if req.world_size == 1:
        os.environ.update(req.env)
        module = importlib.import_module(req.worker_module)
        return int(module.main(list(req.worker_args)))
    env = {**os.environ, **_thread_env(req.procs_per_node), **req.env}
    port = req.master_port or free_port()
    (req.run_dir / "launch").mkdir(parents=True, exist_ok=True)
    cmd = torchrun_command(req, port)
    (req.run_dir / "launch" / "command.txt").write_text(" ".join(cmd) + "\n")
    return _wait_through_ctrl_c(subprocess.Popen(cmd, env=env))


def _wait_through_ctrl_c(proc: subprocess.Popen) -> int:
    """Wait for the agent; a Ctrl-C meanwhile is the agent's to pass on (the ranks save, then exit 75)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def describe(req: LaunchRequest) -> str:
    """The command this launcher would run (for the plan)."""
    if req.world_size == 1:
        return f"in this process: python -m {req.worker_module} {' '.join(req.worker_args)}"
    cmd = torchrun_command(req, req.master_port or 0)
    text = " ".join(cmd).replace("--master-port=0", "--master-port=<free port>")
    return f"{' '.join(f'{k}={v}' for k, v in sorted(req.env.items()))} {text}".strip()


# --- parallel trials ----------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """CUDA devices this process may use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


@dataclass(frozen=True)
class TrialSlots:
    """How many trials run at once and the environment of each slot."""

    envs: list[dict[str, str]] = field(default_factory=list)
    """One environment per slot: OMP_NUM_THREADS, and CUDA_VISIBLE_DEVICES for GPU trials."""

    @property
    def parallel(self) -> int:
        """Trials at once."""
        return len(self.envs)


def trial_slots(parallel: int | None, threads: int | None, procs_per_trial: int, gpus: bool, trials: int) -> TrialSlots:
    """Slots for `trials` trials of `procs_per_trial` ranks: given `parallel`, else what the machine allows.

    CPU: cores // (threads x ranks) trials (1 thread a rank by default); GPU: one GPU a rank, so
    gpus // ranks trials. Never more slots than trials.
    """
    cores = os.cpu_count() or 1
    devices = visible_gpus() if gpus else []
    if parallel is None:
        parallel = len(devices) // procs_per_trial if devices else cores // ((threads or 1) * procs_per_trial)
    parallel = max(1, min(parallel, trials))
    per_rank = threads or max(1, cores // (parallel * procs_per_trial))
    envs = []
    for k in range(parallel):
        env = {"OMP_NUM_THREADS": str(per_rank), "MKL_NUM_THREADS": str(per_rank)}
        own = devices[k * procs_per_trial : (k + 1) * procs_per_trial]
        if len(own) == procs_per_trial:  # fewer GPUs than slots x ranks: trials share what is visible
            env["CUDA_VISIBLE_DEVICES"] = ",".join(own)
        envs.append(env)
    return TrialSlots(envs)


def trial_command(req: LaunchRequest) -> list[str]:
    """The command of one trial's request: the worker itself, or torchrun for several ranks."""
    if req.nodes != 1:
        raise ValueError(f"launcher.nodes={req.nodes}: the local launcher runs on one node")
    if req.world_size == 1:
        return [sys.executable, "-m", req.worker_module, *req.worker_args]
    return torchrun_command(req, req.master_port or free_port())


# Seconds between two looks at a running trial when a study watches it (e.g. to prune it).
WATCH_INTERVAL_S = 0.5

# Asked while a trial's request runs: True stops it with SIGTERM (the worker saves and exits 75, resumable).
StopCheck = Callable[[LaunchRequest], bool]


def _wait(proc: subprocess.Popen, req: LaunchRequest, stop_when: StopCheck | None) -> int:
    """The request's exit code; while it runs, stop it once when `stop_when` says so."""
    stopped = stop_when is None
    while True:
        try:
            return proc.wait(timeout=None if stopped else WATCH_INTERVAL_S)
        except subprocess.TimeoutExpired:
            if stop_when is not None and stop_when(req):
                stopped = True
                proc.send_signal(signal.SIGTERM)  # torchrun passes it on to its ranks


def _run_request(req: LaunchRequest, slot_env: dict[str, str], to_terminal: bool, stop_when: StopCheck | None) -> int:
    env = {**os.environ, **slot_env, **req.env}
    env.pop("HYDRA_FULL_ERROR", None)  # the front end's setting, not the worker's
    req.launch_dir.mkdir(parents=True, exist_ok=True)
    cmd = trial_command(req)
    (req.launch_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    if to_terminal:
        return _wait(subprocess.Popen(cmd, env=env), req, stop_when)
    with open(req.launch_dir / "worker.log", "a") as log:
        log.write(f"==> {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        return _wait(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), req, stop_when)


def trial_log(req: LaunchRequest) -> Path:
    """Where a trial request's output goes when trials run in parallel."""
    return req.launch_dir / "worker.log"


def run_trials(
    trials: list[list[LaunchRequest]],
    slots: TrialSlots,
    on_start: Callable[[int, dict[str, str]], None] | None = None,
    on_end: Callable[[int, int], None] | None = None,
    stop_when: Callable[[int, LaunchRequest], bool] | None = None,
) -> list[int]:
    """Run every trial (its requests in order, stopping at the first failure); returns each trial's exit code.

    With one slot the workers write to the terminal; with several, each to RUN_DIR/launch/worker.log.
    `stop_when(trial, request)` is asked while a request runs; True stops that trial (SIGTERM, exit 75).
    """
    free: queue.Queue[dict[str, str]] = queue.Queue()
    for env in slots.envs:
        free.put(env)
    lock = threading.Lock()
    to_terminal = slots.parallel == 1

    def one(index: int) -> int:
        env = free.get()
        try:
            if on_start is not None:
                with lock:
                    on_start(index, env)
            code = 0
            for req in trials[index]:
                try:
                    check = None if stop_when is None else (lambda r, i=index: stop_when(i, r))
                    code = _run_request(req, env, to_terminal, check)
                except OSError as exc:  # e.g. an unwritable run directory: this trial fails, the others go on
                    print(f"bitcpm: cannot start {req.run_dir}: {exc}", file=sys.stderr, flush=True)
                    code = 127
                if code != 0:
                    break
        finally:
            free.put(env)
        if on_end is not None:
            with lock:
                on_end(index, code)
        return code

    with ThreadPoolExecutor(max_workers=slots.parallel) as pool:
        return list(pool.map(one, range(len(trials))))
