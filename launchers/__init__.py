"""Launchers start worker processes; they know a worker only as a module path and its arguments.

Nothing here imports bitcpm internals, torch, megatron, submitit or NPU modules at import time, so the
launcher layer stays light and generic (tests/unit/test_launch_imports.py checks it).

Every launcher module provides launch(request) -> exit code and describe(request) -> text (what would be
started, for the plan); launchers that can batch a multirun also provide launch_many(requests).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from launchers.request import LaunchRequest, NodeScriptOptions, SlurmOptions

_MODULES = {"local": "launchers.local", "slurm": "launchers.slurm", "ascend": "launchers.ascend"}

__all__ = ["LaunchRequest", "NodeScriptOptions", "SlurmOptions", "get_launcher"]


def get_launcher(name: str) -> ModuleType:
    """The launcher module for launcher.name."""
    try:
        return importlib.import_module(_MODULES[name])
    except KeyError:
        raise ValueError(f"launcher.name={name}: expected one of {', '.join(_MODULES)}") from None
