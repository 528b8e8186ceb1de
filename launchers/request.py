"""What a launcher needs to start a job: a worker module, its arguments and the process layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
    """Rendezvous port; None picks a free one."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every rank."""

    @property
    def world_size(self) -> int:
        """Total ranks."""
        return self.nodes * self.procs_per_node
