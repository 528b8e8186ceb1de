"""Registers the typed schema in Hydra's ConfigStore so YAML presets are checked against it.

Each registered launcher's schema goes to the group launcher/schema under its name: a launcher preset
(conf/launcher/NAME.yaml) lists `- schema@_here_: NAME` first in its defaults, so its keys are typed.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from bitcpm.config.launcher import LauncherConfig
from bitcpm.config.root import JobConfig

SCHEMA_NAME = "bitcpm_schema"
LAUNCHER_SCHEMA_GROUP = "launcher/schema"


def register_schema() -> None:
    """Store JobConfig under SCHEMA_NAME (conf/train.yaml lists it first) and every launcher's schema."""
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=JobConfig)
    for name, schema in LauncherConfig.schemas().items():
        store.store(group=LAUNCHER_SCHEMA_GROUP, name=name, node=schema)
