"""One launch script per node for clusters without a scheduler: torchrun with master address/port and node rank.

The scripts are written into RUN_DIR/launch/ and printed; an operator (or pdsh, or a cluster tool) runs
script i on node i. They assume the run directory and the Python environment are at the same paths on every
node (a shared filesystem or identical images), as the worker reads RUN_DIR/config.yaml.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from launchers.ranktable import rank_table, write_rank_table
from launchers.request import LaunchRequest, NodeScriptOptions

DEFAULT_PORT = 29500
RANK_TABLE = "rank_table.json"


def _options(req: LaunchRequest) -> NodeScriptOptions:
    return req.node_scripts or NodeScriptOptions()


def script_path(req: LaunchRequest, node: int) -> Path:
    """RUN_DIR/launch/node<i>.sh."""
    return req.launch_dir / f"node{node}.sh"


def node_script(req: LaunchRequest, node: int, workdir: str | None = None) -> str:
    """The bash script that starts node `node`'s ranks."""
    opt = _options(req)
    q, python = shlex.quote, shlex.quote(sys.executable)
    host = opt.hosts[node] if node < len(opt.hosts) else None
    master = q(opt.hosts[0]) if opt.hosts else '"${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"'
    log = req.launch_dir.resolve() / f"node{node}.log"
    lines = [
        "#!/usr/bin/env bash",
        f"# bitcpm: node {node} of {req.nodes}{f' ({host})' if host else ''}, {req.procs_per_node} ranks, "
        f"run {Path(req.run_dir).resolve()}",
        f"# Start it on that node: bash {script_path(req, node).resolve()}",
        "set -eo pipefail",
        f"exec > >(tee -a {q(str(log))}) 2>&1",
        f"cd {q(workdir or os.getcwd())}",
    ]
    lines += list(req.setup)
    lines += [f"export {k}={q(v)}" for k, v in sorted(req.env.items())]
    if opt.rank_table:
        lines.append(f"export RANK_TABLE_FILE={q(str((req.launch_dir / RANK_TABLE).resolve()))}")
    lines += [f"{python} -m {module}" for module in req.preflight]
    torchrun = [
        f"exec {python} -m torch.distributed.run",
        f"--nnodes={req.nodes}",
        f"--node-rank={node}",
        f"--nproc-per-node={req.procs_per_node}",
        f"--master-addr={master}",
        f"--master-port={req.master_port or DEFAULT_PORT}",
        f"-m {req.worker_module} {' '.join(q(a) for a in req.worker_args)}",
    ]
    lines.append(" \\\n  ".join(torchrun))
    return "\n".join(lines) + "\n"


def write_node_scripts(req: LaunchRequest) -> list[Path]:
    """Write every node's script (and the rank table when asked); returns the script paths."""
    opt = _options(req)
    if opt.hosts and len(opt.hosts) != req.nodes:
        raise ValueError(f"launcher.hosts lists {len(opt.hosts)} nodes but launcher.nodes={req.nodes}")
    req.launch_dir.mkdir(parents=True, exist_ok=True)
    if opt.rank_table:
        device_ids = opt.device_ids or list(range(req.procs_per_node))
        write_rank_table(req.launch_dir / RANK_TABLE, rank_table(opt.hosts, opt.device_ips, device_ids))
    paths = []
    for node in range(req.nodes):
        path = script_path(req, node)
        path.write_text(node_script(req, node))
        path.chmod(0o755)
        paths.append(path)
    return paths
