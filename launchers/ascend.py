"""Ascend NPU launcher: Slurm with gres npu (through the Slurm launcher), or per-node scripts without a scheduler.

The request already carries the CANN/HCCL environment, the `source set_env.sh` setup line and the per-node
version check (launchers.ascend_check); this module only chooses the path. bitcpm's front end hands
scheduler=slurm jobs to launchers.slurm itself (arrays, chains, requeue: see AscendLauncherConfig), so what
comes here is the per-node scripts, whose capabilities CAPABILITIES declares. Nothing here imports torch_npu:
the worker's NPU backend does, on the nodes.
"""

from __future__ import annotations

from launchers import node_scripts
from launchers.capabilities import Capabilities
from launchers.request import LaunchRequest

# Without a scheduler: writes one script per node and returns (an operator starts them). Jobs with Slurm
# options go to launchers.slurm, whose capabilities apply to them.
CAPABILITIES = Capabilities(multi_node=True, remote=True)


def describe(req: LaunchRequest) -> str:
    """The sbatch script, or every node's launch script, this request would produce."""
    if req.slurm is not None:
        from launchers import slurm

        return slurm.describe(req)
    parts = []
    for node in range(req.nodes):
        parts.append(f"# ---- {node_scripts.script_path(req, node)} ----\n{node_scripts.node_script(req, node)}")
    return "\n".join(parts).rstrip()


def _write_and_print(req: LaunchRequest) -> None:
    paths = node_scripts.write_node_scripts(req)
    for path in paths:
        print(f"# ---- {path} ----\n{path.read_text()}", flush=True)
    hosts = req.node_scripts.hosts if req.node_scripts else []
    where = [f"  node {i}{f' ({hosts[i]})' if i < len(hosts) else ''}: bash {p}" for i, p in enumerate(paths)]
    print("bitcpm: start one script per node (all within HCCL_CONNECT_TIMEOUT of each other):", *where, sep="\n")


def launch(req: LaunchRequest) -> int:
    """Slurm: submit (see launchers.slurm); no scheduler: write and print the per-node scripts."""
    if req.slurm is not None:
        from launchers import slurm

        return slurm.launch(req)
    _write_and_print(req)
    return 0


def launch_many(requests: list[LaunchRequest]) -> int:
    """A multirun: one Slurm array, or one set of scripts per run."""
    on_slurm = [r for r in requests if r.slurm is not None]
    code = 0
    if on_slurm:
        from launchers import slurm

        code = slurm.launch_many(on_slurm)
    for req in requests:
        if req.slurm is None:
            _write_and_print(req)
    return code
