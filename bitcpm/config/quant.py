"""Weight quantization used during training (QAT)."""

from __future__ import annotations

from dataclasses import dataclass, field

# megatron-core module names of the seven MiniCPM projections: linear_qkv = q/k/v, linear_proj = o,
# linear_fc1 = gate+up (fused), linear_fc2 = down.
DEFAULT_TARGETS = ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
QUANT_METHODS = ("none", "ternary")
QUANT_KERNELS = ("auto", "eager", "compile", "triton")


@dataclass
class QuantConfig:
    """Fake-quantization of linear weights with a straight-through estimator."""

    method: str = "none"
    """'none' (full precision) or 'ternary' ({-1, 0, 1} x group-wise absmean scale)."""
    group_size: int = 128
    """Input elements sharing one scale; -1 means one scale per output channel."""
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    """megatron-core linear names to quantize; embeddings, LM head and norms stay high precision."""
    eps: float = 1e-5
    """Lower bound of the scale, so all-zero groups do not divide by zero."""
    activation_bits: int | None = None
    """Optional symmetric per-token activation fake-quant bits (None = weights only, BitCPM4's choice)."""
    kernel: str = "auto"
    """Scale+round+clamp implementation: 'eager', 'compile', 'triton' (CUDA) or 'auto' (compile on CUDA, else eager)."""
    cache: bool = True
    """Quantize each weight once per optimizer step and reuse it across micro-batches and recompute."""

    @property
    def enabled(self) -> bool:
        """True when any quantization is applied."""
        return self.method != "none"

    @property
    def label(self) -> str:
        """The quantizer's one name everywhere (run directory, run name, tags, plan): its conf/quant preset name."""
        if not self.enabled:
            return "none"
        return f"{self.method}_channel" if self.group_size == -1 else f"{self.method}_g{self.group_size}"
