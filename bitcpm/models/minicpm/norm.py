"""RMSNorm for megatron's local spec that also runs under sequence parallelism on every backend.

megatron's WrappedTorchNorm refuses sequence_parallel=True (its torch norm cannot tell megatron that its
weight's gradient is a partial sum). This one marks its weight `sequence_parallel`, so megatron's
finalize_model_grads all-reduces that gradient over the tensor-parallel group, as it does for TE's norms.
The weight lives in the model's params_dtype; statistics are computed in fp32 (as MiniCPM's reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_config import TransformerConfig


class RMSNorm(torch.nn.Module):
    """y = x / rms(x) * weight over the last dimension; same state dict as torch.nn.RMSNorm."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_unused) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        self.weight.sequence_parallel = config.sequence_parallel  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps)
        return out.to(x.dtype)
