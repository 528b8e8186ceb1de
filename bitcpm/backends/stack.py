"""Is the device stack a job needs present on this node? Checked first thing in the worker, before megatron.

Returns one line naming hardware.device and what to install, instead of a traceback from deep inside an
import. It never imports megatron (MindSpeed must patch it first, in the NPU backend's prepare()).
"""

from __future__ import annotations

import importlib
import importlib.util


def _cuda_problem() -> str | None:
    import torch

    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"hardware.device=cuda: torch {torch.__version__} ({build}) sees no CUDA device on this node"


def _npu_problem() -> str | None:
    try:
        importlib.import_module("torch_npu")
    except ImportError:
        return "hardware.device=npu: torch_npu is not installed (install the build matching torch, with CANN)"
    except OSError as exc:  # torch_npu present but CANN's libraries are not on the library path
        return f"hardware.device=npu: torch_npu cannot load CANN ({exc}); source CANN's set_env.sh"
    if importlib.util.find_spec("mindspeed") is None:
        return "hardware.device=npu: MindSpeed is not installed (install it from the Ascend repository)"
    return None


def stack_problem(device: str) -> str | None:
    """One line saying what is missing for hardware.device on this node, or None when it is all there."""
    if device == "cuda":
        return _cuda_problem()
    if device == "npu":
        return _npu_problem()
    return None
