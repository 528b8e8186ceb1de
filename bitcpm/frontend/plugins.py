"""Lets Hydra's plugin scan find bitcpm's Launcher whatever way bitcpm was installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PLUGIN_MODULE = "hydra_plugins.bitcpm_launcher"


def expose_hydra_plugins() -> None:
    """Put the directory holding bitcpm's hydra_plugins/ on sys.path when the plugin scan cannot list it.

    Hydra lists plugins with pkgutil over the `hydra_plugins` namespace path. A wheel install puts the plugin
    in site-packages, where that works; an editable install (pip install -e) serves packages through an
    import hook that can import the plugin module but not list it, so Hydra would not see the launcher.
    """
    spec = importlib.util.find_spec(PLUGIN_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return
    package_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
    root = package_dir.parent.parent  # .../hydra_plugins/bitcpm_launcher -> the directory holding hydra_plugins
    import hydra_plugins

    listed = {Path(p).resolve() for p in hydra_plugins.__path__ if Path(p).is_dir()}
    if package_dir.parent not in listed:
        sys.path.append(str(root))
