"""Fused ternary quantizer as one Triton kernel: one program per group, W read once, W_q written once.

Imported only when quant.kernel=triton (bitcpm.quant.kernels imports it lazily), so nothing else needs
triton. Runs on CUDA tensors; with TRITON_INTERPRET=1 Triton's interpreter runs it on CPU tensors,
which is how the CPU test suite checks it against bitcpm.quant.ternary.quantize_local.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _ternary_group_kernel(w_ptr, out_ptr, group_size, eps, BLOCK: tl.constexpr):
    # Groups tile each row contiguously, so group k of the flattened weight is [k*g, (k+1)*g).
    offsets = tl.arange(0, BLOCK)
    mask = offsets < group_size
    base = tl.program_id(0).to(tl.int64) * group_size
    w = tl.load(w_ptr + base + offsets, mask=mask, other=0.0).to(tl.float32)
    # NaN must survive the clamp (as torch.clamp_min lets it), or a diverged weight would quantize to 0.
    scale = tl.maximum(tl.sum(tl.abs(w), axis=0) / group_size, eps, propagate_nan=tl.PropagateNan.ALL)
    # IEEE division (Triton's default fp32 '/' is approximate) so levels match the eager quantizer.
    x = tl.math.div_rn(w, scale)
    # clamp(round(x), -1, 1) with round-half-to-even: only |x| > 0.5 leaves zero (0.5 itself rounds to 0).
    level = tl.where(x > 0.5, 1.0, tl.where(x < -0.5, -1.0, 0.0))
    level = tl.where(x != x, x, level)
    tl.store(out_ptr + base + offsets, (level * scale).to(out_ptr.dtype.element_ty), mask=mask)


def quantize_triton(weight: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """Same contract as quantize_local (groups local to this rank), one kernel launch."""
    rows, cols = weight.shape
    g = cols if group_size == -1 else group_size
    w = weight.detach().contiguous()
    out = torch.empty_like(w)
    _ternary_group_kernel[(rows * cols // g,)](w, out, g, eps, BLOCK=triton.next_power_of_2(g))
    return out
