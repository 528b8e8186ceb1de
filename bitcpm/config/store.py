"""Registers the typed schema in Hydra's ConfigStore so YAML presets are checked against it."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from bitcpm.config.root import JobConfig

SCHEMA_NAME = "bitcpm_schema"


def register_schema() -> None:
    """Store JobConfig under SCHEMA_NAME; conf/train.yaml lists it first in its defaults."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=JobConfig)
