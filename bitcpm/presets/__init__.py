"""Locates the preset directories (conf/, sweeps/) in a source checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _locate(name: str) -> Path:
    # A source checkout or editable install keeps the presets at the repository top level;
    # a wheel carries them as package data next to this file (see pyproject package-dir).
    in_checkout = _REPO_ROOT / name
    if (in_checkout / ".bitcpm-presets").exists():
        return in_checkout
    packaged = Path(__file__).resolve().parent / name
    if packaged.is_dir():
        return packaged
    raise FileNotFoundError(f"bitcpm presets '{name}/' not found; reinstall bitcpm")


def conf_dir() -> Path:
    """Directory holding the Hydra config groups (model/, parallel/, quant/, ...)."""
    return _locate("conf")


def sweeps_dir() -> Path:
    """Directory holding the named sweep studies."""
    return _locate("sweeps")
