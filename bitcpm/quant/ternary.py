"""BitCPM-CANN's ternary quantizer: group-wise absmean scale, round/clamp to {-1, 0, 1}, STE.

    s = max(mean(|W_g|), eps)          per group of `group_size` input elements (or per output row)
    W_q = clamp(round(W_g / s), -1, 1) * s
    forward uses W + stopgrad(W_q - W) so gradients reach the latent full-precision weights unchanged
    (implemented as a custom autograd function whose value is W_q exactly, see straight_through).

Only plain torch here (no megatron), so the math can be tested against a reference on its own.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def ternary_scales(
    weight: torch.Tensor, group_size: int, eps: float, row_group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Absmean scale of every group: shape [out, in // group_size, 1] (one group per row when -1).

    row_group: the process group across which each row's input dimension is split (a row-parallel
    shard with per-channel scales); the |W| sums are all-reduced so every rank sees the TP=1 scale.
    """
    w = weight.detach()
    rows, cols = w.shape
    if group_size == -1:
        abs_sum = w.abs().float().sum(dim=1, keepdim=True)
        count = cols
        if row_group is not None and dist.get_world_size(row_group) > 1:
            dist.all_reduce(abs_sum, group=row_group)
            count *= dist.get_world_size(row_group)
        return (abs_sum / count).clamp_min(eps).unsqueeze(-1)
    grouped = w.float().reshape(rows, cols // group_size, group_size)
    return grouped.abs().mean(dim=-1, keepdim=True).clamp_min(eps)


def needs_reduction(group_size: int, row_group: dist.ProcessGroup | None) -> bool:
    """True when a scale spans tensor-parallel ranks (per-channel scales of a split input dimension)."""
    return group_size == -1 and row_group is not None and dist.get_world_size(row_group) > 1


def quantize_local(weight: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """W_q when every group lies on this rank: the reference the fused kernels (compile, Triton) implement.

    Computed in fp32 whatever the weight's dtype, returned in the weight's dtype (no gradient).
    """
    rows, cols = weight.shape
    g = cols if group_size == -1 else group_size
    grouped = weight.detach().float().reshape(rows, cols // g, g)
    scales = grouped.abs().mean(dim=-1, keepdim=True).clamp_min(eps)
    q = torch.clamp(torch.round(grouped / scales), -1.0, 1.0) * scales
    return q.reshape(rows, cols).to(weight.dtype)


def ternary_quantize(
    weight: torch.Tensor, group_size: int, eps: float, row_group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Ternary weights times their scale, in the weight's dtype (no gradient)."""
    if not needs_reduction(group_size, row_group):
        return quantize_local(weight, group_size, eps)
    rows, cols = weight.shape
    scales = ternary_scales(weight, group_size, eps, row_group)
    grouped = weight.detach().float().reshape(rows, 1, cols)
    q = torch.clamp(torch.round(grouped / scales), -1.0, 1.0) * scales
    return q.reshape(rows, cols).to(weight.dtype)


class _StraightThrough(torch.autograd.Function):
    """Forward returns the quantized tensor itself; backward hands the gradient to the latent weight."""

    @staticmethod
    def forward(ctx, latent: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # A view, not a copy: a cached W_q is shared by every micro-batch and recompute without new memory.
        return quantized.view_as(quantized)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def straight_through(latent: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """STE `W + stopgrad(W_q - W)` without its two elementwise kernels: the value is exactly W_q.

    The written-out form rounds twice (W_q - W, then + W) and can land one ulp away from W_q; this
    returns W_q bit for bit (what an exported fake-quantized checkpoint holds) with the identical
    gradient (dL/dW = dL/dW_q).
    """
    return _StraightThrough.apply(latent, quantized.detach())


def activation_fake_quant(x: torch.Tensor, bits: int, feature_group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Symmetric per-token absmax fake quantization of activations with an STE.

    feature_group: group across which the feature dimension is split (row-parallel input), so the
    per-token max is taken over the whole feature vector as at TP=1.
    """
    qmax = 2 ** (bits - 1) - 1
    absmax = x.detach().abs().amax(dim=-1, keepdim=True).float()
    if feature_group is not None and dist.get_world_size(feature_group) > 1:
        dist.all_reduce(absmax, op=dist.ReduceOp.MAX, group=feature_group)
    scale = absmax.clamp_min(1e-8) / qmax
    q = (torch.clamp(torch.round(x.detach().float() / scale), -qmax - 1, qmax) * scale).to(x.dtype)
    return x + (q - x).detach()
