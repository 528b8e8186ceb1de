"""The Hydra Launcher that hands a multirun's whole batch to bitcpm: plan every member, then run them.

Hydra's sweeper (BasicSweeper, or any sweeper plugin) expands `-m key=a,b` and `hydra.sweeper.params` and
calls launch() with a batch of override lists; this launcher composes each with Hydra's own config loader,
validates and plans all of them before the first starts, and dispatches by each job's `launcher` group
(local trials in parallel, one Slurm array, Ascend). Hydra imports every plugin module at start-up, so this
one imports nothing of bitcpm until a launch.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules without registering them in
# sys.modules, and dataclasses cannot resolve string annotations of such a module.
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class BitcpmLauncherConf:
    """No settings of its own: trials at once and the scheduler come from the job's `launcher` group."""

    _target_: str = "hydra_plugins.bitcpm_launcher.bitcpm_launcher.BitcpmLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="bitcpm", node=BitcpmLauncherConf, provider="bitcpm")


class BitcpmLauncher(Launcher):
    """Launches a batch of bitcpm jobs (see bitcpm.frontend.hydra_launch)."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep the multirun's config; note what its sweep directory replaces, to undo it if nothing starts."""
        from bitcpm.frontend.hydra_launch import note_sweep_dir

        self.config = config
        self.hydra_context = hydra_context
        note_sweep_dir(config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Plan the whole batch, then run it; one JobReturn per member."""
        from bitcpm.frontend.hydra_launch import launch_batch

        assert self.config is not None, "setup() was not called"
        return launch_batch(self.config, [list(o) for o in job_overrides], initial_job_idx)

    # What bitcpm's Optuna sweeper (hydra/sweeper=optuna) asks of its launcher besides launch().

    def launch_in_study(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, sweep: Any
    ) -> Sequence[JobReturn]:
        """launch() for one batch of an adaptive study (a SweepContext: one parent run, trial numbers, pruning)."""
        from bitcpm.frontend.hydra_launch import launch_batch

        assert self.config is not None, "setup() was not called"
        return launch_batch(self.config, [list(o) for o in job_overrides], initial_job_idx, sweep)

    def plan(self, job_overrides: Sequence[Sequence[str]]) -> None:
        """Compose and validate jobs without running them (ConfigError naming the first bad one)."""
        from bitcpm.frontend.hydra_launch import command_line
        from bitcpm.frontend.members import plan_members

        assert self.config is not None, "setup() was not called"
        plan_members(command_line(self.config), [list(o) for o in job_overrides])

    def base_job(self, overrides: Sequence[str]) -> Any:
        """The composed, validated job of these overrides."""
        from bitcpm.frontend.hydra_launch import command_line
        from bitcpm.frontend.members import plan_members

        assert self.config is not None, "setup() was not called"
        return plan_members(command_line(self.config), [list(overrides)])[0].job
