"""Presets in conf/ state only what differs from the schema: a key set to its dataclass default is noise."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from bitcpm.config.launcher import CannConfig
from bitcpm.config.root import JobConfig
from bitcpm.presets import conf_dir

pytestmark = pytest.mark.quick

_NO_DEFAULT = object()


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return _NO_DEFAULT


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    if isinstance(default, float) and isinstance(value, int | float):
        return float(value) == default
    return type(value) is type(default) and value == default


def repeated_defaults(node: dict | None, schema: type, prefix: str = "") -> list[str]:
    """Keys of a preset whose value equals the schema default (nested dataclasses included)."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    out = []
    for key, value in (node or {}).items():
        if key not in fields:
            continue  # Hydra's own keys (defaults) and interpolations are not schema values
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            out += repeated_defaults(value, hints[key], f"{prefix}{key}.")
            continue
        default = _default(fields[key])
        if default is not _NO_DEFAULT and _same(value, default):
            out.append(f"{prefix}{key}")
    return out


def _schema_of(path: Path, schema: type) -> type:
    """A variant group's preset is checked against the variant its defaults name (`- schema@_here_: slurm`)."""
    if not hasattr(schema, "schemas"):
        return schema
    defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
    chosen = [d["schema@_here_"] for d in defaults if isinstance(d, dict) and "schema@_here_" in d]
    assert chosen, f"{path.name}: name its schema in its defaults (- schema@_here_: NAME)"
    return schema.schemas()[chosen[0]]


def _presets() -> list[tuple[Path, type]]:
    hints = typing.get_type_hints(JobConfig)
    out = [(p, CannConfig) for p in sorted((conf_dir() / "launcher" / "cann").glob("*.yaml"))]
    for group, schema in hints.items():
        if dataclasses.is_dataclass(schema) and (conf_dir() / group).is_dir():
            out += [(p, _schema_of(p, schema)) for p in sorted((conf_dir() / group).glob("*.yaml"))]
    return out


def test_the_check_sees_a_repeated_default() -> None:
    from bitcpm.config.optim import OptimConfig

    assert repeated_defaults({"lr": 0.01, "beta2": 0.99, "warmup_steps": 10}, OptimConfig) == ["lr", "warmup_steps"]


@pytest.mark.parametrize(("path", "schema"), _presets(), ids=lambda x: getattr(x, "name", ""))
def test_preset_states_only_what_differs(path: Path, schema: type) -> None:
    assert repeated_defaults(yaml.safe_load(path.read_text()), schema) == []
