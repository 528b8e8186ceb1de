"""Choice of the scale + round + clamp implementation (quant.kernel).

    eager    quantize_local as plain torch ops (five or six kernels and fp32 temporaries on a GPU)
    compile  the same function through torch.compile: one fused reduction + pointwise kernel
    triton   a hand-written Triton kernel (CUDA only), bitcpm.quant.triton_ternary
    auto     compile on CUDA, eager elsewhere (compiling on a CPU costs seconds and gains little)

Every kernel computes the same function: identical ternary levels, scales that can differ only in the
last bit because a fused reduction adds the group in another order. None of them reads a tensor value
on the host, so no kernel synchronises the device.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
import torch.distributed as dist

from bitcpm.quant.ternary import needs_reduction, quantize_local, ternary_quantize

KERNELS = ("auto", "eager", "compile", "triton")
LocalQuantizer = Callable[[torch.Tensor, int, float], torch.Tensor]


def resolve_kernel(kernel: str, device_type: str) -> str:
    """The concrete kernel for `kernel` on a device type ('cuda', 'cpu', 'npu')."""
    if kernel not in KERNELS:
        raise ValueError(f"quant.kernel={kernel}: expected one of {', '.join(KERNELS)}")
    if kernel == "auto":
        return "compile" if device_type == "cuda" else "eager"
    if kernel == "triton" and device_type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"quant.kernel=triton needs CUDA tensors (got {device_type}); use compile or eager")
    return kernel


@functools.cache
def _compiled() -> LocalQuantizer:
    # Static shapes: a model has four weight shapes per rank, each compiled once and reused every step.
    return torch.compile(quantize_local, fullgraph=True, dynamic=False)


def local_quantizer(kernel: str) -> LocalQuantizer:
    """The function (weight, group_size, eps) -> W_q of a concrete kernel name."""
    if kernel == "eager":
        return quantize_local
    if kernel == "compile":
        return _compiled()
    if kernel == "triton":
        try:
            from bitcpm.quant.triton_ternary import quantize_triton
        except ImportError as exc:
            raise ValueError(f"quant.kernel=triton needs the triton package ({exc}); use compile or eager") from None
        return quantize_triton
    raise ValueError(f"quant.kernel={kernel}: not a concrete kernel")


def quantize_weight(
    weight: torch.Tensor,
    group_size: int,
    eps: float,
    row_group: dist.ProcessGroup | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """W_q of `weight` with the chosen kernel (no gradient).

    Per-channel scales of a row-parallel shard need an all-reduce between the |W| sum and the rounding,
    so that case always takes the eager path (its collective is asynchronous device work, not a host wait).
    """
    if needs_reduction(group_size, row_group):
        return ternary_quantize(weight, group_size, eps, row_group)
    return local_quantizer(resolve_kernel(kernel, weight.device.type))(weight, group_size, eps)
