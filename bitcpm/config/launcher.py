"""Where and how the worker processes are started: the registry of launchers and the schema of each one's keys.

Every launcher is one registry line below: its name (`launcher=NAME`), what starts the jobs (a module of
launchers/, which declares its Capabilities) and the dataclass of its `launcher.*` keys. The schema also
carries the launcher's own rules (check), allowed values (value_specs) and its share of the launch request
(request_fields), so the front end dispatches on capabilities and never compares a launcher's name.
A preset (conf/launcher/NAME.yaml) names its schema in its defaults: `- schema@_here_: NAME`.
"""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitcpm.config.errors import ConfigError
from bitcpm.config.specs import AT_LEAST_1, NON_NEGATIVE, Custom, OneOf, Range, Spec, Text
from launchers.capabilities import Capabilities
from launchers.request import LaunchRequest, NodeScriptOptions, NodeScriptSettings, SlurmOptions, SlurmSettings

if TYPE_CHECKING:
    from bitcpm.config.root import JobConfig

VERSION_CHECK_MODULE = "launchers.ascend_check"


@dataclass(frozen=True)
class RegisteredLauncher:
    """One launcher: what starts its jobs and the schema of its `launcher.*` keys."""

    launcher: str | object
    """A module path (imported on first use, so the front end stays light) or the launcher object itself."""
    schema: type[LauncherConfig]
    """Its config dataclass (a LauncherConfig)."""

    def load(self) -> Any:
        """The launcher: a module or object with CAPABILITIES, launch and describe (see launchers.capabilities)."""
        return importlib.import_module(self.launcher) if isinstance(self.launcher, str) else self.launcher


_REGISTRY: dict[str, RegisteredLauncher] = {}


def register_launcher(name: str, launcher: str | object, schema: type[LauncherConfig]) -> None:
    """Make `launcher=NAME` selectable: its launcher (module path or object) and its schema, whose name is NAME.

    Every key of the schema has a default; its preset (conf/launcher/NAME.yaml, or one in a --config-dir) lists
    `- schema@_here_: NAME` in its defaults. Call it before composing (bitcpm.train.main) in a package's code.
    """
    default = next(f.default for f in fields(schema) if f.name == "name")
    if default != name:
        raise ValueError(f"{schema.__name__}.name defaults to {default!r}; register it as that name, not {name!r}")
    _REGISTRY[name] = RegisteredLauncher(launcher, schema)


def registered(name: str) -> RegisteredLauncher:
    """The registry entry of launcher.name, or a ConfigError listing the registered names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"launcher.name={name}: expected one of {', '.join(_REGISTRY)}") from None


def _check_name(value: Any) -> None:
    registered(value)


# --- the keys of every launcher ----------------------------------------------------------------------


@dataclass
class LauncherConfig:
    """The keys every launcher has: its name, the process layout and how many trials of a study run at once."""

    name: str = "local"
    """The launcher: a registered name (local, slurm, ascend, or one a package registers); its preset sets it."""
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

    def world_size(self, model_parallel_size: int) -> int:
        """Total worker processes."""
        per_node = self.procs_per_node if self.procs_per_node is not None else model_parallel_size
        return self.nodes * per_node

    def ranks_per_node(self, job: JobConfig) -> int:
        """Ranks on each node of this job."""
        return self.world_size(job.parallel.model_parallel_size) // self.nodes

    # --- the schema's hooks: a launcher's schema overrides what differs ---

    @classmethod
    def value_specs(cls) -> dict[str, Spec]:
        """Allowed values of this schema's keys (config/ranges.py checks them with every other group's)."""
        return {
            "name": Custom(_check_name, "no_such_launcher"),
            "nodes": AT_LEAST_1,
            "procs_per_node": AT_LEAST_1,
            "master_port": Range(1, 65535),
            "max_parallel": AT_LEAST_1,
            "threads_per_trial": AT_LEAST_1,
        }

    @classmethod
    def schemas(cls) -> dict[str, type[LauncherConfig]]:
        """Every registered launcher's schema by name (the variants of the `launcher` node)."""
        return {name: entry.schema for name, entry in _REGISTRY.items()}

    @classmethod
    def schema_for(cls, node: Mapping[str, Any]) -> type[LauncherConfig]:
        """The schema of a `launcher` node: the one its name registered, else the common keys' (this class).

        A composed job naming an unregistered launcher is refused (bitcpm.config.load.to_job); a saved run of a
        launcher this process has not registered (the worker of a package's launcher) still loads its common keys.
        """
        name = node.get("name", "local")
        entry = _REGISTRY.get(name) if isinstance(name, str) else None
        return entry.schema if entry is not None else LauncherConfig

    def implementation(self) -> Any:
        """The launcher that starts this config's jobs (a module of launchers/ for the shipped ones)."""
        return registered(self.name).load()

    def capabilities(self) -> Capabilities:
        """What the launcher does with this config's jobs; the front end dispatches on it."""
        return self.implementation().CAPABILITIES

    def label(self) -> str:
        """How messages name this launcher, e.g. 'launcher=slurm'."""
        return f"launcher={self.name}"

    def packages(self) -> list[tuple[str, str]]:
        """Optional packages a launch needs: (module, pip extra of bitcpm); preflight names the extra."""
        return []

    def check(self, job: JobConfig) -> None:
        """The launcher's own rules, after the generic ones (config/validate.py's check_launcher)."""

    def request_fields(self, job: JobConfig, run_dir: Path) -> dict[str, Any]:
        """This launcher's fields of the LaunchRequest (environment, setup lines, scheduler options)."""
        return {}

    def describe_mode(self, request: LaunchRequest) -> str:
        """How the jobs start, shown after the launcher's name in the plan ('' for nothing)."""
        return ""

    def plan_warnings(self, job: JobConfig) -> list[str]:
        """Warnings the plan shows under the launch (the job still launches)."""
        return []


@dataclass
class LocalLauncherConfig(LauncherConfig):
    """This machine: the worker in this process, N ranks through torchrun, or a study's trials in parallel slots."""

    name: str = "local"
    """local."""


@dataclass
class SlurmLauncherConfig(SlurmSettings, LauncherConfig):
    """A Slurm cluster through submitit: the common keys plus Slurm's (declared once, in launchers.request)."""

    name: str = "slurm"
    """slurm."""
    gpus_per_node: int | None = None
    """GPUs per node (--gpus-per-node); None: one per rank when hardware.device=cuda, none otherwise."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the batch script before the ranks start (module load, source a venv)."""

    @classmethod
    def value_specs(cls) -> dict[str, Spec]:
        """The common keys' values plus Slurm's."""
        return {
            **super().value_specs(),
            "partition": Text("Slurm partition"),
            "account": Text("Slurm account"),
            "qos": Text("Slurm QOS"),
            "time_min": AT_LEAST_1,
            "constraint": Text("Slurm constraint"),
            "gpus_per_node": NON_NEGATIVE,
            "cpus_per_task": AT_LEAST_1,
            "mem_gb": AT_LEAST_1,
            "sbatch": Text("sbatch option value"),
            "setup": Text("shell line"),
            "signal_delay_s": AT_LEAST_1,
            "max_restarts": NON_NEGATIVE,
        }

    def capabilities(self) -> Capabilities:
        """Slurm's capabilities; launcher.wait=false returns after submission."""
        return replace(super().capabilities(), waits=self.wait)

    def packages(self) -> list[tuple[str, str]]:
        """submitit submits the jobs."""
        return [("submitit", "slurm")]

    def check(self, job: JobConfig) -> None:
        """NPU ranks need launcher=ascend (the CANN/HCCL environment); the warning comes before the limit."""
        if job.hardware.device == "npu":
            raise ConfigError(
                "hardware.device=npu: use launcher=ascend (it sets the CANN/HCCL environment; scheduler=slurm submits)"
            )
        self.check_warning_time()

    def check_warning_time(self) -> None:
        """A Slurm job can be warned, checkpoint and requeue before its time limit."""
        if not 0 < self.signal_delay_s < self.time_min * 60:
            raise ConfigError(
                f"launcher.signal_delay_s={self.signal_delay_s}: must be positive and below launcher.time_min*60="
                f"{self.time_min * 60} (it must cover one step plus a checkpoint)"
            )

    def slurm_options(self, job: JobConfig, run_dir: Path) -> SlurmOptions:
        """sbatch resources: the user's Slurm settings, GPUs for CUDA ranks, gres npu for Ascend ranks."""
        device, per_node = job.hardware.device, self.ranks_per_node(job)
        settings = {f.name: getattr(self, f.name) for f in fields(SlurmSettings)}
        settings["sbatch"] = {str(k): str(v) for k, v in self.sbatch.items()}
        gpus = self.gpus_per_node if self.gpus_per_node is not None else per_node
        return SlurmOptions(
            **settings,
            job_name=f"bitcpm-{Path(run_dir).name}",
            gpus_per_node=gpus if device == "cuda" else None,
            gres=f"npu:{per_node}" if device == "npu" else None,
            array_parallelism=self.max_parallel,
        )

    def request_fields(self, job: JobConfig, run_dir: Path) -> dict[str, Any]:
        """The batch script's setup lines and the sbatch options."""
        return {"setup": list(self.setup), "slurm": self.slurm_options(job, run_dir)}

    def describe_mode(self, request: LaunchRequest) -> str:
        """sbatch, and whether the front end waits for the jobs."""
        return f"sbatch; {'waits for the job' if self.wait else 'returns after submission'}"


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

    @classmethod
    def value_specs(cls) -> dict[str, Spec]:
        """Allowed values of the CANN keys."""
        return {
            "set_env": Text("path"),
            "hccl_connect_timeout": AT_LEAST_1,
            "hccl_exec_timeout": AT_LEAST_1,
            "hccl_socket_ifname": Text("NIC name"),
            "visible_devices": Text("device list"),
            "alloc_conf": Text("allocator setting"),
            "task_queue_enable": Range(0, 2),
            "cpu_affinity": Range(1, 2),
            "extra": Text("environment value"),
        }

    def env(self) -> dict[str, str]:
        """The CANN/HCCL environment variables of every NPU rank."""
        env = {
            "HCCL_CONNECT_TIMEOUT": str(self.hccl_connect_timeout),
            "HCCL_EXEC_TIMEOUT": str(self.hccl_exec_timeout),
            "TASK_QUEUE_ENABLE": str(self.task_queue_enable),
            # Megatron's overlap of TP communication relies on one hardware queue, on NPU as on CUDA.
            "CUDA_DEVICE_MAX_CONNECTIONS": "1",
        }
        optional = {
            "HCCL_SOCKET_IFNAME": self.hccl_socket_ifname,
            "GLOO_SOCKET_IFNAME": self.hccl_socket_ifname,
            "ASCEND_RT_VISIBLE_DEVICES": self.visible_devices,
            "PYTORCH_NPU_ALLOC_CONF": self.alloc_conf,
            "CPU_AFFINITY_CONF": None if self.cpu_affinity is None else str(self.cpu_affinity),
        }
        env.update({k: v for k, v in optional.items() if v is not None})
        env.update({str(k): str(v) for k, v in self.extra.items()})
        return env


@dataclass
class AscendLauncherConfig(NodeScriptSettings, SlurmLauncherConfig):
    """Ascend NPU nodes: through Slurm with gres npu, or one launch script per node without a scheduler."""

    name: str = "ascend"
    """ascend."""
    scheduler: str = "slurm"
    """'slurm' (sbatch with gres npu; the Slurm keys apply) or 'none' (one launch script per node in RUN_DIR/launch)."""
    version_check: bool = True
    """Check torch / torch_npu / CANN / MindSpeed / megatron-core versions on each node before starting."""
    cann: CannConfig = field(default_factory=CannConfig)
    """CANN/HCCL environment (conf/launcher/cann/)."""

    @property
    def on_slurm(self) -> bool:
        """Submitted to Slurm (scheduler=slurm)."""
        return self.scheduler == "slurm"

    @classmethod
    def value_specs(cls) -> dict[str, Spec]:
        """The Slurm keys' values plus the scheduler and the per-node scripts'."""
        return {
            **super().value_specs(),
            "scheduler": OneOf(("slurm", "none")),
            "hosts": Text("host address"),
            "device_ips": Text("device IP"),
        }

    def implementation(self) -> Any:
        """scheduler=slurm: the Slurm launcher (arrays, chains, requeue); none: launchers.ascend's node scripts."""
        return importlib.import_module("launchers.slurm") if self.on_slurm else super().implementation()

    def capabilities(self) -> Capabilities:
        """Slurm's with scheduler=slurm; the per-node scripts' otherwise."""
        return super().capabilities() if self.on_slurm else self.implementation().CAPABILITIES

    def label(self) -> str:
        """launcher=ascend and its scheduler."""
        return f"{super().label()} (scheduler={self.scheduler})"

    def packages(self) -> list[tuple[str, str]]:
        """submitit with scheduler=slurm."""
        return super().packages() if self.on_slurm else []

    def check(self, job: JobConfig) -> None:
        """Slurm's warning time, or the node list and rank table of the per-node scripts."""
        if self.on_slurm:
            self.check_warning_time()
            return
        if self.hosts and len(self.hosts) != self.nodes:
            raise ConfigError(f"launcher.hosts lists {len(self.hosts)} nodes but launcher.nodes={self.nodes}")
        if self.rank_table:
            per_node = self.ranks_per_node(job)
            if not self.hosts:
                raise ConfigError("launcher.rank_table=true needs launcher.hosts (node addresses in node-rank order)")
            for node, host in enumerate(self.hosts):
                if node >= len(self.device_ips) or len(self.device_ips[node]) < per_node:
                    raise ConfigError(
                        f"launcher.rank_table=true needs launcher.device_ips[{node}] ({host}): {per_node} NPU device "
                        "IPs (one list per node, in launcher.hosts order)"
                    )

    def request_fields(self, job: JobConfig, run_dir: Path) -> dict[str, Any]:
        """Slurm's fields or the per-node scripts' options, plus the CANN environment and version check on NPUs."""
        out = super().request_fields(job, run_dir) if self.on_slurm else {}
        setup, env, preflight = list(out.get("setup", [])), {}, []
        if job.hardware.device == "npu":
            env = self.cann.env()
            if self.cann.set_env:
                setup.insert(0, f"source {shlex.quote(self.cann.set_env)}")
            if self.version_check:
                preflight.append(VERSION_CHECK_MODULE)
        out.update(setup=setup, env=env, preflight=preflight)
        if not self.on_slurm:
            visible = self.cann.visible_devices
            out["node_scripts"] = NodeScriptOptions(
                hosts=list(self.hosts),
                device_ips=[list(ips) for ips in self.device_ips],
                rank_table=self.rank_table,
                device_ids=[int(d) for d in visible.split(",")] if visible else [],
            )
        return out

    def describe_mode(self, request: LaunchRequest) -> str:
        """sbatch, or where the per-node scripts go."""
        if self.on_slurm:
            return super().describe_mode(request)
        return f"one script per node, written to {request.launch_dir}/node<i>.sh"

    def plan_warnings(self, job: JobConfig) -> list[str]:
        """Ascend without NPU ranks starts plain ranks."""
        device = job.hardware.device
        return [] if device == "npu" else [f"launcher=ascend with hardware.device={device}: no CANN/HCCL environment"]


# --- the registry: one line per launcher -------------------------------------------------------------

register_launcher("local", "launchers.local", LocalLauncherConfig)
register_launcher("slurm", "launchers.slurm", SlurmLauncherConfig)
register_launcher("ascend", "launchers.ascend", AscendLauncherConfig)
