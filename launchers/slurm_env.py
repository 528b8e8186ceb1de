"""torch.distributed's env:// variables of one Slurm task, derived from the SLURM_* variables srun sets."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping

_PORT_BASE, _PORT_SPAN = 20000, 40000


def expand_nodelist(nodelist: str) -> list[str]:
    """Hostnames of a Slurm node list ('gpu[01-03,07],login1'); `scontrol show hostnames` when available."""
    if not nodelist:
        return []
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
        )
        names = out.stdout.split()
        if names:
            return names
    except (OSError, subprocess.SubprocessError):
        pass
    return _expand_locally(nodelist)


def _expand_locally(nodelist: str) -> list[str]:
    # Fallback for machines without scontrol (tests, login nodes): prefix[a-b,c] groups separated by commas.
    hosts: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            for i in range(int(low), int(high or low) + 1):
                hosts.append(f"{prefix}{i:0{len(low)}d}")
    return hosts


def master_port_for(job_id: str, fixed: int | None = None) -> int:
    """Rendezvous port: the configured one, else one derived from the job id (same on every task and requeue)."""
    if fixed:
        return fixed
    digits = re.sub(r"\D", "", job_id) or "0"
    return _PORT_BASE + int(digits) % _PORT_SPAN


def distributed_env(environ: Mapping[str, str], master_port: int | None = None) -> dict[str, str]:
    """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT of this task."""
    world = int(environ.get("SLURM_NTASKS", "1"))
    nodes = int(environ.get("SLURM_JOB_NUM_NODES", environ.get("SLURM_NNODES", "1")))
    hosts = expand_nodelist(environ.get("SLURM_JOB_NODELIST", environ.get("SLURM_NODELIST", "")))
    return {
        "RANK": environ.get("SLURM_PROCID", "0"),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "LOCAL_WORLD_SIZE": str(max(1, world // max(1, nodes))),
        "NODE_RANK": environ.get("SLURM_NODEID", "0"),
        "MASTER_ADDR": hosts[0] if hosts else "127.0.0.1",
        "MASTER_PORT": str(master_port_for(environ.get("SLURM_JOB_ID", "0"), master_port)),
    }


def thread_env(environ: Mapping[str, str], local_world: int) -> dict[str, str]:
    """OMP_NUM_THREADS from --cpus-per-task, else the node's cores shared by its ranks (unless already set)."""
    if "OMP_NUM_THREADS" in environ:
        return {}
    cpus = environ.get("SLURM_CPUS_PER_TASK")
    threads = int(cpus) if cpus else max(1, (os.cpu_count() or 1) // max(1, local_world))
    return {"OMP_NUM_THREADS": str(threads)}
