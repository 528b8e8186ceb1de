"""Typed JobConfig from a composed DictConfig or a saved config.yaml."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bitcpm.config.launcher import LauncherConfig, registered
from bitcpm.config.root import JobConfig
from bitcpm.config.typecheck import check_node, concrete_schema
from bitcpm.config.validate import ConfigError


def unknown_keys(node: Any, schema: type, prefix: str = "") -> list[str]:
    """Keys present in node that the dataclass schema does not declare (dict-typed fields are open)."""
    if not dataclasses.is_dataclass(schema) or not isinstance(node, DictConfig | dict):
        return []
    schema = concrete_schema(schema, node)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    out = []
    for key in node:
        if key not in fields:
            out.append(f"{prefix}{key}")
            continue
        child_type = hints[key]
        if dataclasses.is_dataclass(child_type):
            out += unknown_keys(node[key], child_type, f"{prefix}{key}.")
    return out


def to_job(cfg: DictConfig | dict[str, Any], saved: bool = False) -> JobConfig:
    """Merge onto the schema (type-checks every key) and build the dataclasses.

    A composed job must name a registered launcher (said first, before its keys look unknown); a saved run
    (`saved`) of a launcher this process has not registered loads with the common launcher keys.
    """
    name = OmegaConf.select(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg, "launcher.name", default=None)
    if not saved and isinstance(name, str):
        registered(name)
    extra = unknown_keys(cfg, JobConfig)
    if extra:
        raise ConfigError(f"{extra[0]}: unknown key (not in the bitcpm schema)")
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    check_node(plain, JobConfig)  # one-line type errors naming the full key, also inside lists
    # The launcher's own schema (by launcher.name) first: a saved config.yaml carries no types.
    launcher = OmegaConf.structured(concrete_schema(LauncherConfig, plain.get("launcher") or {}))
    merged = OmegaConf.merge(OmegaConf.structured(JobConfig), {"launcher": launcher}, plain)
    job = OmegaConf.to_object(merged)
    assert isinstance(job, JobConfig)
    return job


def load_job(path: Path) -> JobConfig:
    """Read a run directory's resolved config.yaml."""
    cfg = OmegaConf.load(path)
    launcher = cfg.get("launcher")
    if isinstance(launcher, DictConfig):
        # Keep the keys its launcher's schema has: older runs saved every launcher's keys in one flat section,
        # and a launcher registered only in the front end's process (a package's) loads with the common keys.
        known = {f.name for f in dataclasses.fields(concrete_schema(LauncherConfig, launcher))}
        for key in [k for k in launcher if k not in known]:
            del launcher[key]
    return to_job(cfg, saved=True)


def job_to_yaml(job: JobConfig) -> str:
    """The resolved config as YAML (what a run directory stores and MLflow keeps as an artifact)."""
    return OmegaConf.to_yaml(OmegaConf.structured(job))
