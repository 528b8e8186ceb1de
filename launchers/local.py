"""Local launcher: world size 1 in this process; N ranks through torch.distributed's elastic launcher."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys

from launchers.request import LaunchRequest


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
