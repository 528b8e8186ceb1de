"""The shipped studies (sweeps/NAME.yaml) as Hydra's `sweep` config group: `python -m bitcpm.train -m sweep=NAME`.

Each file is an ordinary Hydra config in the global package: it sets `hydra.sweeper.params` (the search
space, in Hydra's sweep grammar) and the study's fixed settings. They are registered in Hydra's ConfigStore
because sweeps/ lives beside conf/, not inside it; a user's own study goes in `--config-dir DIR` as
DIR/sweep/NAME.yaml. `python -m bitcpm.frontend.sweeps` lists the shipped studies.
"""

from __future__ import annotations

import sys

from bitcpm.presets import sweeps_dir

GROUP = "sweep"


def _number(value: float) -> int | float:
    # Integral results stay ints so they fit int keys (train.steps, model.hidden_size).
    nearest = round(value)
    return int(nearest) if abs(value - nearest) < 1e-9 * max(1.0, abs(value)) else value


# Arithmetic for studies that sweep one variable and derive others (ffn = 3 x width, QAT steps = f x budget).
RESOLVERS = {
    "bitcpm.mul": lambda a, b: _number(float(a) * float(b)),
    "bitcpm.div": lambda a, b: _number(float(a) / float(b)),
    "bitcpm.sub": lambda a, b: _number(float(a) - float(b)),
}


def register_resolvers() -> None:
    """Make ${bitcpm.mul:a,b}, ${bitcpm.div:a,b} and ${bitcpm.sub:a,b} available to every config."""
    from omegaconf import OmegaConf

    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def study_names() -> list[str]:
    """Names of the shipped studies."""
    return sorted(p.stem for p in sweeps_dir().glob("*.yaml"))


def register_sweeps() -> None:
    """Store every sweeps/NAME.yaml as option NAME of the `sweep` group (package _global_)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    register_resolvers()
    store = ConfigStore.instance()
    for path in sorted(sweeps_dir().glob("*.yaml")):
        store.store(group=GROUP, name=path.stem, node=OmegaConf.load(path), package="_global_", provider="bitcpm")


def describe(name: str) -> str:
    """The first comment line of a study file (its one-line description)."""
    for line in (sweeps_dir() / f"{name}.yaml").read_text().splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("#") and text and not text.startswith("@package"):
            return text
    return ""


def main(argv: list[str] | None = None) -> int:
    """List the shipped studies and how to run one."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        print("usage: python -m bitcpm.frontend.sweeps   (lists the studies of sweeps/)", file=sys.stderr)
        return 2
    for name in study_names():
        print(f"{name:<24} {describe(name)}")
    print("\nrun one:  python -m bitcpm.train -m sweep=NAME   (add dry_run=true to plan every trial)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
