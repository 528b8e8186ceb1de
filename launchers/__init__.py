"""Launchers start worker processes; they know a worker only as a module path and its arguments.

Nothing here imports bitcpm internals, torch, megatron, submitit or NPU modules at import time, so the
launcher layer stays light and generic (tests/unit/test_launch_imports.py checks it).

Every launcher module declares CAPABILITIES and provides launch(request) -> exit code and describe(request)
-> text (what would be started, for the plan), plus the functions its capabilities promise (launch_many for
arrays, launch_chain for chains, run_trials for parallel trials; launchers/capabilities.py lists them).
Which module serves `launcher=NAME` is bitcpm's registry (bitcpm/config/launcher.py), one line per launcher.
"""

from __future__ import annotations

from launchers.capabilities import Capabilities
from launchers.request import LaunchRequest, NodeScriptOptions, SlurmOptions

__all__ = ["Capabilities", "LaunchRequest", "NodeScriptOptions", "SlurmOptions"]
