"""The Hydra Sweeper `hydra/sweeper=optuna`: an Optuna (ask/tell) study whose batches go to bitcpm's Launcher.

    python -m bitcpm.train -m hydra/sweeper=optuna hydra.sweeper.n_trials=16 hydra.sweeper.n_jobs=2 \
        'optim.lr=tag(log,interval(1e-3,1e-1))' model.init_std=0.05,0.1,0.2

Settings and behaviour: bitcpm.frontend.optuna_sweep. Hydra imports every plugin module at start-up, so this
one imports only the settings' dataclass (no optuna, no torch) until a sweep runs.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules without registering them in
# sys.modules, and dataclasses cannot resolve string annotations of such a module.
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from bitcpm.frontend.optuna_sweep import OptunaSettings


@dataclass
class BitcpmOptunaSweeperConf(OptunaSettings):
    """hydra.sweeper of `hydra/sweeper=optuna`."""

    _target_: str = "hydra_plugins.bitcpm_optuna_sweeper.bitcpm_optuna_sweeper.BitcpmOptunaSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=BitcpmOptunaSweeperConf, provider="bitcpm")


class BitcpmOptunaSweeper(Sweeper):
    """Asks Optuna for batches of trials and hands each to the configured Launcher (bitcpm's)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = OptunaSettings(**{k: _plain(v) for k, v in settings.items()})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Instantiate the launcher Hydra is configured with."""
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        """Run the study (see bitcpm.frontend.optuna_sweep.run_sweep)."""
        from pathlib import Path

        from hydra.core.override_parser.overrides_parser import OverridesParser

        from bitcpm.frontend.optuna_sweep import Sweep, run_sweep

        assert self.config is not None and self.hydra_context is not None, "setup() was not called"
        config, launcher = self.config, self.launcher
        if not hasattr(launcher, "launch_in_study"):
            raise ValueError("hydra/sweeper=optuna: needs bitcpm's launcher (hydra/launcher=bitcpm)")
        params = [f"{k}={v}" for k, v in self.settings.params.items()]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*params, *arguments])
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")  # Hydra's record of the multirun, as its sweepers write
        choice = config.hydra.runtime.choices.get("sweep")
        run_sweep(
            Sweep(
                self.settings,
                overrides,
                launch=launcher.launch_in_study,
                plan=launcher.plan,
                base_job=launcher.base_job,
                sweep_choice=str(choice) if choice else None,
            )
        )


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
