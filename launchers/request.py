"""What a launcher needs to start a job: a worker module, its arguments, the process layout and scheduler options.

Everything here is plain data: the front end (bitcpm) fills it in from its config; launchers never look at
bitcpm's config themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SlurmOptions:
    """sbatch resources and the requeue policy of a Slurm job."""

    job_name: str = "bitcpm"
    """Job name shown by squeue/sacct."""
    partition: str | None = None
    """--partition; None uses the cluster default."""
    account: str | None = None
    """--account."""
    qos: str | None = None
    """--qos."""
    time_min: int = 60
    """--time in minutes."""
    constraint: str | None = None
    """--constraint."""
    gpus_per_node: int | None = None
    """--gpus-per-node (CUDA)."""
    gres: str | None = None
    """--gres, e.g. 'npu:8' on Ascend nodes."""
    cpus_per_task: int | None = None
    """--cpus-per-task."""
    mem_gb: int | None = None
    """--mem per node, GB."""
    sbatch: dict[str, str] = field(default_factory=dict)
    """Extra sbatch options (name without dashes -> value, '' for a bare flag)."""
    signal_delay_s: int = 120
    """USR2 is sent this many seconds before the time limit."""
    max_restarts: int = 3
    """Requeues after the warning signal before giving up."""
    wait: bool = True
    """Block until the job ends."""
    array_parallelism: int | None = None
    """Array members running at once (sbatch --array=0-N%K); None leaves the array unthrottled."""


@dataclass(frozen=True)
class NodeScriptOptions:
    """Clusters without a scheduler: one launch script per node (launcher=ascend, scheduler=none)."""

    hosts: list[str] = field(default_factory=list)
    """Node addresses in node-rank order; empty means MASTER_ADDR / NODE_RANK come from the environment."""
    device_ids: list[int] = field(default_factory=list)
    """Physical NPU ids used on each node, in local-rank order."""
    device_ips: list[list[str]] = field(default_factory=list)
    """Per node (hosts order), its NPU device IPs in device order; needed for a rank table."""
    rank_table: bool = False
    """Write an HCCL rank table (v1.0) and export RANK_TABLE_FILE."""


@dataclass(frozen=True)
class LaunchRequest:
    """A job to start."""

    worker_module: str
    """Module run as `python -m` on every rank (it must define main(argv) -> int)."""
    worker_args: list[str]
    """Arguments of the worker (e.g. the run's config.yaml)."""
    run_dir: Path
    """Run directory: launch scripts and logs go under run_dir/launch."""
    nodes: int = 1
    """Nodes."""
    procs_per_node: int = 1
    """Ranks per node."""
    master_port: int | None = None
    """Rendezvous port; None picks a free one (local) or derives one from the Slurm job id."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every rank."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before the ranks start (e.g. sourcing CANN's set_env.sh)."""
    preflight: list[str] = field(default_factory=list)
    """Python modules run once per node before the ranks (`python -m ...`; non-zero exit stops the launch)."""
    slurm: SlurmOptions | None = None
    """Set for jobs submitted to Slurm."""
    node_scripts: NodeScriptOptions | None = None
    """Set for clusters without a scheduler."""

    @property
    def world_size(self) -> int:
        """Total ranks."""
        return self.nodes * self.procs_per_node

    @property
    def launch_dir(self) -> Path:
        """Where launchers write scripts, job ids and restart records."""
        return Path(self.run_dir) / "launch"
