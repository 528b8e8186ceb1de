"""From a validated job to a launcher's LaunchRequest: process layout, scheduler options, NPU environment.

This is the only place that reads launcher settings out of bitcpm's config; the launchers receive plain data
(launchers/request.py) and never import bitcpm.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from bitcpm.config.derived import procs_per_node
from bitcpm.config.launcher import CannConfig
from bitcpm.config.root import JobConfig
from launchers.request import LaunchRequest, NodeScriptOptions, SlurmOptions

VERSION_CHECK_MODULE = "launchers.ascend_check"


def on_slurm(job: JobConfig) -> bool:
    """Submitted to Slurm (launcher=slurm, or launcher=ascend with scheduler=slurm)."""
    return job.launcher.name == "slurm" or (job.launcher.name == "ascend" and job.launcher.scheduler == "slurm")


def cann_env(cann: CannConfig) -> dict[str, str]:
    """The CANN/HCCL environment variables of every NPU rank."""
    env = {
        "HCCL_CONNECT_TIMEOUT": str(cann.hccl_connect_timeout),
        "HCCL_EXEC_TIMEOUT": str(cann.hccl_exec_timeout),
        "TASK_QUEUE_ENABLE": str(cann.task_queue_enable),
        # Megatron's overlap of TP communication relies on one hardware queue, on NPU as on CUDA.
        "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    }
    optional = {
        "HCCL_SOCKET_IFNAME": cann.hccl_socket_ifname,
        "GLOO_SOCKET_IFNAME": cann.hccl_socket_ifname,
        "ASCEND_RT_VISIBLE_DEVICES": cann.visible_devices,
        "PYTORCH_NPU_ALLOC_CONF": cann.alloc_conf,
        "CPU_AFFINITY_CONF": None if cann.cpu_affinity is None else str(cann.cpu_affinity),
    }
    env.update({k: v for k, v in optional.items() if v is not None})
    env.update({str(k): str(v) for k, v in cann.extra.items()})
    return env


def slurm_options(job: JobConfig, run_dir: Path) -> SlurmOptions:
    """sbatch resources: GPUs for CUDA ranks, gres npu for Ascend ranks."""
    lc, per_node = job.launcher, procs_per_node(job)
    gpus = lc.gpus_per_node
    if gpus is None and job.hardware.device == "cuda":
        gpus = per_node
    return SlurmOptions(
        job_name=f"bitcpm-{run_dir.name}",
        partition=lc.partition,
        account=lc.account,
        qos=lc.qos,
        time_min=lc.time_min,
        constraint=lc.constraint,
        gpus_per_node=gpus if job.hardware.device == "cuda" else None,
        gres=f"npu:{per_node}" if job.hardware.device == "npu" else None,
        cpus_per_task=lc.cpus_per_task,
        mem_gb=lc.mem_gb,
        sbatch={str(k): str(v) for k, v in lc.sbatch.items()},
        signal_delay_s=lc.signal_delay_s,
        max_restarts=lc.max_restarts,
        wait=lc.wait,
        array_parallelism=lc.max_parallel,
    )


def request_for(job: JobConfig, run_dir: Path, worker_module: str) -> LaunchRequest:
    """The launch request of a job whose resolved config is (or will be) RUN_DIR/config.yaml."""
    lc = job.launcher
    # Scheduled ranks may start elsewhere (another node, another cwd): give them absolute paths.
    run_dir = Path(run_dir) if lc.name == "local" else Path(run_dir).absolute()
    env: dict[str, str] = {}
    setup = list(lc.setup) if on_slurm(job) else []
    preflight: list[str] = []
    scripts = None
    if lc.name == "ascend" and job.hardware.device == "npu":
        env = cann_env(lc.cann)
        if lc.cann.set_env:
            setup.insert(0, f"source {shlex.quote(lc.cann.set_env)}")
        if lc.version_check:
            preflight.append(VERSION_CHECK_MODULE)
    if lc.name == "ascend" and lc.scheduler == "none":
        visible = lc.cann.visible_devices
        scripts = NodeScriptOptions(
            hosts=list(lc.hosts),
            device_ids=[int(d) for d in visible.split(",")] if visible else [],
            device_ips=[list(ips) for ips in lc.device_ips],
            rank_table=lc.rank_table,
        )
    return LaunchRequest(
        worker_module=worker_module,
        worker_args=[str(run_dir / "config.yaml")],
        run_dir=run_dir,
        nodes=lc.nodes,
        procs_per_node=procs_per_node(job),
        master_port=lc.master_port,
        env=env,
        setup=setup,
        preflight=preflight,
        slurm=slurm_options(job, run_dir) if on_slurm(job) else None,
        node_scripts=scripts,
    )


def describe_launch(job: JobConfig, worker_module: str = "bitcpm.worker") -> list[str]:
    """What the launcher would start (sbatch script, per-node scripts or a command), for the plan."""
    from bitcpm.frontend.rundir import run_dir_for
    from launchers import get_launcher

    req = request_for(job, run_dir_for(job), worker_module)
    text = get_launcher(job.launcher.name).describe(req)
    head = f"launch     {job.launcher.name}"
    if req.slurm is not None:
        head += f" (sbatch; {'waits for the job' if req.slurm.wait else 'returns after submission'})"
    elif req.node_scripts is not None:
        head += f" (one script per node, written to {req.launch_dir}/node<i>.sh)"
    lines = [head + ":"]
    if job.launcher.name == "ascend" and job.hardware.device != "npu":
        lines.append(f"WARNING    launcher=ascend with hardware.device={job.hardware.device}: no CANN/HCCL environment")
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
