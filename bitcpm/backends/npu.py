"""Ascend NPU backend (HCCL) through torch_npu and MindSpeed.

MindSpeed's megatron adaptor patches megatron-core when it is imported (and reads sys.argv), so
prepare() must run before the first megatron import. Neither package can be installed without the
CANN toolkit; the imports are lazy and fail with one clear line.
"""

from __future__ import annotations

import importlib

import torch


def _import(name: str, hint: str):
    try:
        return importlib.import_module(name)
    except (ImportError, OSError) as exc:  # OSError: torch_npu present but CANN libraries missing
        raise RuntimeError(f"hardware.device=npu needs {name} ({hint}); import failed: {exc}") from None


def transformer_config_overrides() -> dict:
    """TransformerConfig fields this backend needs (none: megatron's defaults are made for it)."""
    return {}


def prepare() -> None:
    """Import torch_npu, then MindSpeed's megatron adaptor, before anything imports megatron."""
    import sys

    if any(m == "megatron" or m.startswith("megatron.") for m in sys.modules):
        raise RuntimeError("megatron was imported before the NPU backend: MindSpeed cannot patch it")
    _import("torch_npu", "install the torch_npu build matching torch and source CANN's set_env.sh")
    _import("mindspeed.megatron_adaptor", "install MindSpeed from the Ascend repository (PyPI has a placeholder)")


def device(local_rank: int) -> torch.device:
    """One NPU per local rank."""
    torch.npu.set_device(local_rank)  # type: ignore[attr-defined]
    return torch.device("npu", local_rank)


def after_process_group() -> None:
    """Nothing beyond what MindSpeed patched."""


def synchronize() -> None:
    """Wait for the NPU so step times are real."""
    torch.npu.synchronize()  # type: ignore[attr-defined]


def peak_memory_bytes() -> int | None:
    """Peak memory allocated by torch on this NPU."""
    return torch.npu.max_memory_allocated()  # type: ignore[attr-defined]
