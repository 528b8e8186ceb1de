"""Model registry: architecture name -> builder of a megatron-core module."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bitcpm.config.model import ModelConfig

ModelBuilder = Callable[..., Any]


def _minicpm(model_cfg: ModelConfig, **kwargs: Any) -> Any:
    from bitcpm.models.minicpm.model import build_minicpm

    return build_minicpm(model_cfg, **kwargs)


REGISTRY: dict[str, ModelBuilder] = {"minicpm": _minicpm}


def build_model(model_cfg: ModelConfig, **kwargs: Any) -> Any:
    """Build the model named by model_cfg.architecture."""
    try:
        builder = REGISTRY[model_cfg.architecture]
    except KeyError:
        raise ValueError(
            f"model.architecture={model_cfg.architecture}: unknown (registered: {', '.join(REGISTRY)})"
        ) from None
    return builder(model_cfg, **kwargs)
