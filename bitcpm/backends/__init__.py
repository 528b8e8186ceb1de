"""Device backends: everything that differs between CPU, CUDA and Ascend NPU lives here.

A backend module provides:
    prepare()                      imports that must precede megatron (NPU: torch_npu + MindSpeed adaptor)
    device(local_rank) -> torch.device
    after_process_group()          patches or settings needed once torch.distributed is up
    transformer_config_overrides() TransformerConfig fields the backend needs (CPU: unbatched p2p for gloo)
    synchronize()                  wait for queued device work (for honest step timings)
    peak_memory_bytes() -> int | None
"""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {"cpu": "bitcpm.backends.cpu", "cuda": "bitcpm.backends.cuda", "npu": "bitcpm.backends.npu"}


def get_backend(device: str) -> ModuleType:
    """Import the backend module for hardware.device (lazily: only the chosen one is imported)."""
    try:
        return importlib.import_module(_MODULES[device])
    except KeyError:
        raise ValueError(f"hardware.device={device}: expected one of {', '.join(_MODULES)}") from None
