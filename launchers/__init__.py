"""Launchers start worker processes; they know a worker only as a module path and its arguments.

Nothing here imports bitcpm internals, torch or megatron at import time, so the launcher layer stays
light and generic.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from launchers.request import LaunchRequest

_MODULES = {"local": "launchers.local"}

__all__ = ["LaunchRequest", "get_launcher"]


def get_launcher(name: str) -> ModuleType:
    """The launcher module for launcher.name; each has launch(request) -> exit code."""
    try:
        return importlib.import_module(_MODULES[name])
    except KeyError:
        raise ValueError(f"launcher.name={name}: expected one of {', '.join(_MODULES)}") from None
