"""Swaps megatron-core column/row-parallel linears for ternary ones, as cfg.quant says.

Model code knows nothing about quantization: the converter changes the class of the existing
modules in place, so weights, hooks (muP) and parameter identities stay as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

from bitcpm.config.quant import QuantConfig
from bitcpm.quant.ternary import activation_fake_quant, ternary_fake_quant


class _TernaryLinear:
    """Mixin: quantize the weight (and optionally the input) right before megatron's matmul."""

    quant_group_size: int
    quant_eps: float
    quant_activation_bits: int | None
    split_input: bool  # row-parallel: the input dimension is split over the tensor-parallel group

    def _forward_impl(self, input: torch.Tensor, weight: torch.Tensor, *args: Any, **kwargs: Any):
        tp_group = parallel_state.get_tensor_model_parallel_group() if self.split_input else None
        if self.quant_activation_bits is not None:
            input = activation_fake_quant(input, self.quant_activation_bits, tp_group)
        weight = ternary_fake_quant(weight, self.quant_group_size, self.quant_eps, tp_group)
        return super()._forward_impl(input, weight, *args, **kwargs)  # type: ignore[misc]


class TernaryColumnParallelLinear(_TernaryLinear, ColumnParallelLinear):
    """Column-parallel linear with ternary weights (rows split over tp: groups stay rank-local)."""

    split_input = False


class TernaryRowParallelLinear(_TernaryLinear, RowParallelLinear):
    """Row-parallel linear with ternary weights (input split over tp: per-channel scales all-reduce)."""

    split_input = True


def convert_to_ternary(model: torch.nn.Module, cfg: QuantConfig) -> list[str]:
    """Make every linear named in cfg.targets ternary; returns the converted module names."""
    if not cfg.enabled:
        return []
    if cfg.method != "ternary":
        raise ValueError(f"quant.method={cfg.method}: no converter")
    converted = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] not in cfg.targets:
            continue
        if isinstance(module, RowParallelLinear):
            module.__class__ = TernaryRowParallelLinear
        elif isinstance(module, ColumnParallelLinear):
            module.__class__ = TernaryColumnParallelLinear
        else:
            raise ValueError(f"quant.targets: {name} is a {type(module).__name__}, not a parallel linear")
        module.quant_group_size = cfg.group_size
        module.quant_eps = cfg.eps
        module.quant_activation_bits = cfg.activation_bits
        converted.append(name)
    if not converted:
        raise ValueError(f"quant.targets={list(cfg.targets)} matched no module of the model")
    return converted


def refresh_quantized_weights(model: torch.nn.Module) -> None:
    """Called after every optimizer step: the latent weights changed, so cached ternary weights are stale.

    The fake quantizer currently recomputes W_q on every forward, so there is nothing to refresh yet;
    a once-per-step cache (reused across micro-batches and recompute) invalidates itself here.
    """
    del model
