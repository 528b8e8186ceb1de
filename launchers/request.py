"""What a launcher needs to start a job: a worker module, its arguments, the process layout and scheduler options.

Everything here is plain data: the front end (bitcpm) fills it in from its config; launchers never look at
bitcpm's config themselves. The settings a user chooses (SlurmSettings, NodeScriptSettings) are declared here
once: bitcpm's launcher schemas inherit them as config keys, and the options add what the job implies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SlurmSettings:
    """The Slurm settings a user chooses (the `launcher` keys of launcher=slurm; bitcpm's schema inherits them)."""

    partition: str | None = None
    """Slurm partition (sbatch --partition); None uses the cluster's default."""
    account: str | None = None
    """Slurm account to charge (--account)."""
    qos: str | None = None
    """Slurm quality of service (--qos)."""
    time_min: int = 60
    """Wall-clock limit in minutes (--time); the job is signalled signal_delay_s before it."""
    constraint: str | None = None
    """Node feature constraint (--constraint), e.g. 'h100'."""
    cpus_per_task: int | None = None
    """CPU cores per rank (--cpus-per-task; also OMP_NUM_THREADS); None keeps Slurm's default."""
    mem_gb: int | None = None
    """Host memory per node in GB (--mem); None keeps Slurm's default."""
    sbatch: dict[str, str] = field(default_factory=dict)
    """Extra sbatch options, name without dashes -> value ('' for a bare flag), e.g. {exclusive: ''}."""
    signal_delay_s: int = 120
    """Seconds before the time limit when Slurm sends USR2: must cover one step plus a checkpoint."""
    max_restarts: int = 3
    """Requeues after a time-limit or preemption signal before the job is left stopped (resumable by hand)."""
    wait: bool = True
    """Block until the jobs end and return their outcome; false returns after submission (launch/jobs.json)."""


@dataclass
class SlurmOptions(SlurmSettings):
    """sbatch resources and the requeue policy of one Slurm job: the user's settings plus what the job implies."""

    job_name: str = "bitcpm"
    """Job name shown by squeue/sacct."""
    gpus_per_node: int | None = None
    """--gpus-per-node (CUDA)."""
    gres: str | None = None
    """--gres, e.g. 'npu:8' on Ascend nodes."""
    array_parallelism: int | None = None
    """Array members running at once (sbatch --array=0-N%K); None leaves the array unthrottled."""


@dataclass
class NodeScriptSettings:
    """The settings of clusters without a scheduler (launcher=ascend, scheduler=none; bitcpm's schema inherits them)."""

    hosts: list[str] = field(default_factory=list)
    """Node addresses in node-rank order (the first is the rendezvous master); empty: MASTER_ADDR from the env."""
    device_ips: list[list[str]] = field(default_factory=list)
    """For a rank table: per node (in hosts order) its NPU device IPs in device order (`hccn_tool -i N -ip -g`)."""
    rank_table: bool = False
    """Write an HCCL rank table (v1.0 JSON) and export RANK_TABLE_FILE to every rank."""


@dataclass
class NodeScriptOptions(NodeScriptSettings):
    """One launch script per node: the user's settings plus the devices each node uses."""

    device_ids: list[int] = field(default_factory=list)
    """Physical NPU ids used on each node, in local-rank order."""


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
