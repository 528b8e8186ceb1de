"""From a validated job to a launcher's LaunchRequest, and the launch part of the plan.

The request's common part (worker, run directory, process layout) is filled in here; each launcher's schema
(bitcpm/config/launcher.py) adds its own fields (environment, setup lines, scheduler options). The launchers
receive plain data (launchers/request.py) and never import bitcpm.
"""

from __future__ import annotations

from pathlib import Path

from bitcpm.config.derived import procs_per_node
from bitcpm.config.root import JobConfig
from launchers.request import LaunchRequest


def request_for(job: JobConfig, run_dir: Path, worker_module: str) -> LaunchRequest:
    """The launch request of a job whose resolved config is (or will be) RUN_DIR/config.yaml."""
    lc = job.launcher
    # Ranks that start elsewhere (another node, another cwd) need absolute paths.
    run_dir = Path(run_dir).absolute() if lc.capabilities().remote else Path(run_dir)
    return LaunchRequest(
        worker_module=worker_module,
        worker_args=[str(run_dir / "config.yaml")],
        run_dir=run_dir,
        nodes=lc.nodes,
        procs_per_node=procs_per_node(job),
        master_port=lc.master_port,
        **lc.request_fields(job, run_dir),
    )


def describe_launch(job: JobConfig, worker_module: str = "bitcpm.worker") -> list[str]:
    """What the launcher would start (sbatch script, per-node scripts or a command), for the plan."""
    from bitcpm.frontend.rundir import run_dir_for

    lc = job.launcher
    req = request_for(job, run_dir_for(job), worker_module)
    text = lc.implementation().describe(req)
    mode = lc.describe_mode(req)
    lines = [f"launch     {lc.name}{f' ({mode})' if mode else ''}:"]
    lines += [f"WARNING    {warning}" for warning in lc.plan_warnings(job)]
    return lines + [f"           {line}" if line else "" for line in text.splitlines()]


def launch_refusal(job: JobConfig) -> str | None:
    """Why a planned job must not launch (its memory plan exceeds the device), or None."""
    from bitcpm.plan.memory import memory_overflow

    if job.hardware.allow_memory_overflow:
        return None
    reason = memory_overflow(job)
    return None if reason is None else f"{reason}; set hardware.allow_memory_overflow=true to launch anyway"


def plan_text(job: JobConfig) -> str:
    """The plan of a job followed by how it will be launched: what `dry_run=true` prints."""
    from bitcpm.plan import format_plan, make_plan

    return format_plan(job, make_plan(job), describe_launch(job))
