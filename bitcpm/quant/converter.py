"""Swaps megatron-core column/row-parallel linears for ternary ones, as cfg.quant says.

Model code knows nothing about quantization: the converter changes the class of the existing
modules in place, so weights, hooks (muP) and parameter identities stay as they are.

Each converted linear quantizes its weight once per weight version (bitcpm.quant.cache) with the kernel
quant.kernel names (bitcpm.quant.kernels); the STE hands every micro-batch's gradient to the latent weight.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

from bitcpm.config.quant import QuantConfig
from bitcpm.quant.cache import QuantizedWeightCache
from bitcpm.quant.kernels import quantize_weight
from bitcpm.quant.ternary import activation_fake_quant, straight_through


class _TernaryLinear:
    """Mixin: quantize the weight (and optionally the input) right before megatron's matmul."""

    quant_group_size: int
    quant_eps: float
    quant_activation_bits: int | None
    quant_kernel: str
    quant_cache: bool
    ternary_cache: QuantizedWeightCache
    split_input: bool  # row-parallel: the input dimension is split over the tensor-parallel group

    def ternary_weight(self, weight: torch.Tensor, tp_group: dist.ProcessGroup | None) -> torch.Tensor:
        """W_q with the STE: from the cache while `weight` is unchanged, else quantized now."""
        quantized = self.ternary_cache.lookup(weight) if self.quant_cache else None
        if quantized is None:
            with torch.no_grad():
                quantized = quantize_weight(weight, self.quant_group_size, self.quant_eps, tp_group, self.quant_kernel)
            if self.quant_cache:
                self.ternary_cache.store(weight, quantized)
        return straight_through(weight, quantized)

    def _forward_impl(self, input: torch.Tensor, weight: torch.Tensor, *args: Any, **kwargs: Any):
        tp_group = parallel_state.get_tensor_model_parallel_group() if self.split_input else None
        if self.quant_activation_bits is not None:
            input = activation_fake_quant(input, self.quant_activation_bits, tp_group)
        return super()._forward_impl(input, self.ternary_weight(weight, tp_group), *args, **kwargs)  # type: ignore[misc]


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
        module.quant_kernel = cfg.kernel
        module.quant_cache = cfg.cache
        module.ternary_cache = QuantizedWeightCache()
        converted.append(name)
    if not converted:
        raise ValueError(f"quant.targets={list(cfg.targets)} matched no module of the model")
    return converted


def ternary_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The converted linears of a model."""
    return [m for m in model.modules() if isinstance(m, _TernaryLinear)]


def refresh_quantized_weights(model: torch.nn.Module) -> None:
    """Called after every optimizer step: drop every cached W_q (the latent weights changed).

    The cache already keys each entry on the weight's `_version`, so this is not needed for correctness
    after in-place updates (bitcpm.quant.cache explains the one exception, writes through `.data`); it
    frees the stale W_q now rather than when the next forward replaces it.
    """
    for module in ternary_modules(model):
        module.ternary_cache.clear()
