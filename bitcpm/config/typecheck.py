"""Type check of a composed config against the schema, with one-line errors that name the full key.

OmegaConf checks types too, but inside lists of dataclasses (data.sources, pipeline) its messages lose
the path, and its wording varies by node type. This walk runs first and names every key the same way:
`data.sources[0].weight=abc: expected a number`.

A dataclass whose subclasses are variants picked by the node's values (LauncherConfig: one schema per
registered launcher, by launcher.name) declares schema_for(node) and schemas(); the walks here follow them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from bitcpm.config.errors import ConfigError

_BOOL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off"})
_MISSING = "???"


def _show(value: Any) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{key}={_show(value)}: expected {expected}")


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        try:
            int(value.replace("_", ""))
        except ValueError:
            return False
        return True
    return False


def _is_float(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOL_WORDS)


_SCALARS = {
    int: (_is_int, "an integer"),
    float: (_is_float, "a number"),
    bool: (_is_bool, "true or false"),
    str: (lambda v: isinstance(v, str | int | float | bool), "a string"),
}


def strip_optional(hint: Any) -> Any:
    """T for `T | None`; any other hint unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def concrete_schema(schema: type, node: Any) -> type:
    """The schema a mapping is checked against: the variant its values pick (schema_for), else `schema`."""
    pick = getattr(schema, "schema_for", None)
    return pick(node) if pick is not None and isinstance(node, Mapping) else schema


def check_value(value: Any, hint: Any, key: str) -> None:
    """Raise ConfigError unless `value` (plain containers) fits the type hint."""
    if isinstance(value, str) and value == _MISSING:
        return  # a mandatory value left unset: reported by the merge as 'a value is required'
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            _fail(key, value, f"a mapping of {hint.__name__} fields")
        check_node(value, concrete_schema(hint, value), f"{key}.")
    elif origin is list:
        if not isinstance(value, list):
            _fail(key, value, "a list, e.g. [a, b]")
        for i, item in enumerate(value):
            check_value(item, args[0], f"{key}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            _fail(key, value, "a mapping, e.g. {name: value}")
        for name, item in value.items():
            check_value(item, args[1], f"{key}.{name}")
    elif hint in _SCALARS:
        ok, expected = _SCALARS[hint]
        if value is None:
            _fail(key, value, f"{expected} (null is not allowed here)")
        if not ok(value):
            _fail(key, value, expected)


def check_node(node: dict[str, Any], schema: type, prefix: str = "") -> None:
    """Check a mapping against a dataclass schema: no unknown keys, every value of the declared type."""
    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    for key, value in node.items():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (not in the bitcpm schema)")
        check_value(value, hints[key], f"{prefix}{key}")


def _hint_at(schema: type, key: str) -> Any | None:
    """Type hint of a dotted key under the schema; None when the key is not a plain schema path."""
    hint: Any = schema
    for part in key.split("."):
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if not dataclasses.is_dataclass(hint):
            return None
        # A variant node: the key's type in whichever variant declares it (the choice is made later, by Hydra).
        variants = getattr(hint, "schemas", None)
        schemas = [*variants().values(), hint] if variants is not None else [hint]
        hints = next((h for h in map(typing.get_type_hints, schemas) if part in h), None)
        if hints is None:
            return None
        hint = hints[part]
    return hint


def check_override_types(overrides: list[str], schema: type) -> None:
    """Type-check `key=value` command-line overrides before Hydra merges them (its errors lose the key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for ov in OverridesParser.create().parse_overrides(overrides):
        key = ov.key_or_group
        if ov.is_sweep_override() or ov.is_delete() or "/" in key or key.startswith("hydra") or ov.package:
            continue
        hint = _hint_at(schema, key)
        value = ov.value()
        if hint is None or (isinstance(value, str) and "${" in value):
            continue
        if dataclasses.is_dataclass(hint) and isinstance(value, str):
            continue  # a config-group choice (model=8b), resolved by Hydra
        check_value(value, hint, key)
