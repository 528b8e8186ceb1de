"""Where and how the worker processes are started: this machine, a Slurm cluster, or Ascend NPU nodes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CannConfig:
    """Ascend CANN / HCCL environment of every rank (launcher=ascend; conf/launcher/cann/)."""

    set_env: str | None = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
    """CANN's set_env.sh, sourced before the workers start (the toolkit's default install path); None skips it."""
    hccl_connect_timeout: int = 1800
    """HCCL_CONNECT_TIMEOUT (s) to build communicators; HCCL's 120 s default is too short for big jobs."""
    hccl_exec_timeout: int = 1800
    """HCCL_EXEC_TIMEOUT (s) a collective may wait, e.g. for a slow checkpoint on another rank."""
    hccl_socket_ifname: str | None = None
    """HCCL_SOCKET_IFNAME (and GLOO_SOCKET_IFNAME): host NIC for rendezvous, e.g. 'eth0'; None lets HCCL pick."""
    visible_devices: str | None = None
    """ASCEND_RT_VISIBLE_DEVICES, e.g. '0,1,2,3'; None leaves every NPU of the node visible."""
    alloc_conf: str | None = "expandable_segments:True"
    """PYTORCH_NPU_ALLOC_CONF: expandable segments cut fragmentation (MindSpeed's recommended setting)."""
    task_queue_enable: int = 2
    """TASK_QUEUE_ENABLE: 0 off, 1 async operator dispatch, 2 also moves work off the host thread."""
    cpu_affinity: int | None = 1
    """CPU_AFFINITY_CONF: 1 binds each rank's threads to the cores near its NPU, 2 finer binding; None off."""
    extra: dict[str, str] = field(default_factory=dict)
    """Further environment variables for every rank (e.g. HCCL_IF_BASE_PORT, ASCEND_LAUNCH_BLOCKING)."""


@dataclass
class LauncherConfig:
    """Launcher selection and its resources."""

    name: str = "local"
    """'local' (this machine), 'slurm' (submitit, sbatch) or 'ascend' (NPU nodes: Slurm or per-node scripts)."""
    nodes: int = 1
    """Nodes to use."""
    procs_per_node: int | None = None
    """Worker processes (ranks, = Slurm tasks) per node; None means tp x pp x cp, i.e. dp = 1."""
    master_port: int | None = None
    """Rendezvous port for world size > 1; None picks a free one (local) or derives one from the job id."""
    max_parallel: int | None = None
    """Trials of a multirun at once: local None = cores // (threads x ranks), or GPUs // ranks; Slurm: array %N."""
    threads_per_trial: int | None = None
    """local multirun: OMP threads of each trial rank; None = 1 to size max_parallel, else cores // trials."""

    # --- Slurm: launcher=slurm, and launcher=ascend with scheduler=slurm ---
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
    gpus_per_node: int | None = None
    """GPUs per node (--gpus-per-node); None: one per rank when hardware.device=cuda, none otherwise."""
    cpus_per_task: int | None = None
    """CPU cores per rank (--cpus-per-task; also OMP_NUM_THREADS); None keeps Slurm's default."""
    mem_gb: int | None = None
    """Host memory per node in GB (--mem); None keeps Slurm's default."""
    sbatch: dict[str, str] = field(default_factory=dict)
    """Extra sbatch options, name without dashes -> value ('' for a bare flag), e.g. {exclusive: ''}."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the batch script before the ranks start (module load, source a venv)."""
    signal_delay_s: int = 120
    """Seconds before the time limit when Slurm sends USR2: must cover one step plus a checkpoint."""
    max_restarts: int = 3
    """Requeues after a time-limit or preemption signal before the job is left stopped (resumable by hand)."""
    wait: bool = True
    """Block until the jobs end and return their outcome; false returns after submission (launch/jobs.json)."""

    # --- Ascend NPU clusters: launcher=ascend ---
    scheduler: str = "slurm"
    """launcher=ascend: 'slurm' (sbatch with gres npu) or 'none' (one launch script per node in RUN_DIR/launch)."""
    hosts: list[str] = field(default_factory=list)
    """scheduler=none: node addresses in node-rank order; the first is the rendezvous master."""
    device_ips: list[list[str]] = field(default_factory=list)
    """rank_table: per node (in hosts order) its NPU device IPs in device order (`hccn_tool -i N -ip -g`)."""
    rank_table: bool = False
    """scheduler=none: write an HCCL rank table (v1.0 JSON) and export RANK_TABLE_FILE to every rank."""
    version_check: bool = True
    """Check torch / torch_npu / CANN / MindSpeed / megatron-core versions on each node before starting."""
    cann: CannConfig = field(default_factory=CannConfig)
    """CANN/HCCL environment (launcher=ascend)."""

    def world_size(self, model_parallel_size: int) -> int:
        """Total worker processes."""
        per_node = self.procs_per_node if self.procs_per_node is not None else model_parallel_size
        return self.nodes * per_node
