"""Where and how the worker processes are started."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LauncherConfig:
    """Launcher selection and its resources."""

    name: str = "local"
    """'local' (this machine)."""
    nodes: int = 1
    """Nodes to use."""
    procs_per_node: int | None = None
    """Worker processes per node; None means the model-parallel size (tp x pp x cp), i.e. dp = 1."""
    master_port: int | None = None
    """Rendezvous port for world size > 1; None picks a free one."""

    def world_size(self, model_parallel_size: int) -> int:
        """Total worker processes."""
        per_node = self.procs_per_node if self.procs_per_node is not None else model_parallel_size
        return self.nodes * per_node
