"""Search spaces: `key=lo:hi[:log]` (a float range) or `key=a,b,c` (choices) -> Optuna distributions.

Keys are config keys (optim.lr, model.init_std, ...) plus `width`, which sets the hidden size together
with heads and MLP size at the base model's depth and head size (bitcpm.windtunnel.widths).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

WIDTH = "width"
# MiniCPM's muP hyperparameters (paper §A.1: found 0.01 / 0.1 / 12 / 1.4 on a 9M model).
MUP_SPACE = (
    "optim.lr=1e-3:1e-1:log",
    "model.init_std=0.02:0.5:log",
    "model.scale_emb=1:24",
    "model.scale_depth=0.5:4",
)


@dataclass(frozen=True)
class Param:
    """One searched key."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def distribution(self):
        """The Optuna distribution of this key."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        return FloatDistribution(self.low, self.high, log=self.log)


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_param(spec: str) -> Param:
    """'optim.lr=1e-3:1e-1:log' or 'width=64,128' -> Param (ValueError naming the spec)."""
    key, sep, value = spec.partition("=")
    if not sep or not key or not value:
        raise ValueError(f"--param {spec}: expected key=lo:hi[:log] or key=a,b,...")
    if ":" in value:
        parts = value.split(":")
        log = parts[-1] == "log"
        bounds = parts[:-1] if log else parts
        try:
            low, high = (float(b) for b in bounds)
        except ValueError:
            raise ValueError(f"--param {spec}: expected two numbers lo:hi") from None
        if not low < high or (log and low <= 0):
            raise ValueError(f"--param {spec}: needs lo < hi (and lo > 0 on a log scale)")
        return Param(key, low, high, log)
    return Param(key, choices=tuple(_number(v) for v in value.split(",")))


def grid(params: list[Param]) -> dict[str, list[Any]]:
    """The grid of an all-choices space (for Optuna's GridSampler)."""
    ranges = [p.key for p in params if p.choices is None]
    if ranges:
        raise ValueError(f"--sampler grid: {', '.join(ranges)} is a range; a grid needs choices (key=a,b,...)")
    return {p.key: list(p.choices) for p in params}


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every point of an all-choices space, in order."""
    axes = grid(params)
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def trial_overrides(values: dict[str, Any], base_model) -> list[str]:
    """Hydra overrides of one trial's values (width expands to the model's shape keys)."""
    from bitcpm.windtunnel.widths import width_overrides

    out: list[str] = []
    for key, value in values.items():
        if key == WIDTH:
            out += width_overrides(base_model, int(value))
        else:
            out.append(f"{key}={value}")
    return out
