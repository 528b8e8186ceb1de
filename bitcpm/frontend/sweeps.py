"""`python -m bitcpm.frontend.sweeps NAME` prints the multirun overrides of a named study in sweeps/."""

from __future__ import annotations

import sys

import yaml

from bitcpm.presets import sweeps_dir


def study_overrides(name: str) -> list[str]:
    """Hydra sweep overrides (key=v1,v2) of sweeps/NAME.yaml."""
    path = sweeps_dir() / f"{name}.yaml"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in sweeps_dir().glob("*.yaml")))
        raise SystemExit(f"bitcpm: error: no sweep '{name}' (available: {names})")
    study = yaml.safe_load(path.read_text())
    return [f"{key}={value}" for key, value in study["overrides"].items()]


def main(argv: list[str] | None = None) -> int:
    """Print the overrides, space separated, for use in a shell command line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bitcpm.frontend.sweeps NAME", file=sys.stderr)
        return 2
    print(" ".join(study_overrides(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
