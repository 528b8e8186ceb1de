"""Typed JobConfig from a composed DictConfig or a saved config.yaml."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bitcpm.config.root import JobConfig
from bitcpm.config.typecheck import check_node
from bitcpm.config.validate import ConfigError


def unknown_keys(node: Any, schema: type, prefix: str = "") -> list[str]:
    """Keys present in node that the dataclass schema does not declare (dict-typed fields are open)."""
    if not dataclasses.is_dataclass(schema) or not isinstance(node, DictConfig | dict):
        return []
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


def to_job(cfg: DictConfig | dict[str, Any]) -> JobConfig:
    """Merge onto the schema (type-checks every key) and build the dataclasses."""
    extra = unknown_keys(cfg, JobConfig)
    if extra:
        raise ConfigError(f"{extra[0]}: unknown key (not in the bitcpm schema)")
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    check_node(plain, JobConfig)  # one-line type errors naming the full key, also inside lists
    merged = OmegaConf.merge(OmegaConf.structured(JobConfig), cfg)
    job = OmegaConf.to_object(merged)
    assert isinstance(job, JobConfig)
    return job


def load_job(path: Path) -> JobConfig:
    """Read a run directory's resolved config.yaml."""
    return to_job(OmegaConf.load(path))


def job_to_yaml(job: JobConfig) -> str:
    """The resolved config as YAML (what a run directory stores and MLflow keeps as an artifact)."""
    return OmegaConf.to_yaml(OmegaConf.structured(job))
