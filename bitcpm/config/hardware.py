"""Device kind and its peak numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HardwareConfig:
    """The accelerator a run trains on."""

    name: str = "cpu"
    """Preset name."""
    device: str = "cpu"
    """'cpu', 'cuda' or 'npu': selects bitcpm.backends.<device>."""
    dist_backend: str = "gloo"
    """torch.distributed backend: gloo, nccl or hccl."""
    dtype: str = "float32"
    """Compute dtype of activations and weights in the forward: float32 or bfloat16."""
    peak_tflops: float | None = None
    """Dense bf16 peak per device for MFU; None means unknown (no MFU is reported)."""
    memory_gb: float | None = None
    """Memory per device, for the plan's fit check."""
    allow_memory_overflow: bool = False
    """Launch even when the plan's memory per device exceeds memory_gb (the plan is an estimate; default: refuse)."""
    devices_per_node: int = 1
    """Accelerators per node (CPU: processes per node)."""
