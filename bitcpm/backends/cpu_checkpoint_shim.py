"""CPU-only patches that let megatron-core 0.16's dist_checkpointing save and load without CUDA.

dist_checkpointing's torch_dist writer synchronises CUDA and allocates its small bookkeeping tensors
on "cuda" even when every tensor it writes lives on the CPU. Each patch below rebinds the name `torch`
inside ONE megatron module to a proxy whose CUDA calls are CPU no-ops and whose tensor factories map
a CUDA device to the CPU; torch itself is never patched. SITES names, for each module, the functions
that need it and the CUDA expression they contain; tests/unit/test_cpu_checkpoint_shim.py fails when
a megatron upgrade moves or removes one of them. Applied only where CUDA is absent.
"""

from __future__ import annotations

import functools
import importlib
import types

import torch

# module -> {function whose body needs the patch: the CUDA expression found in it}
SITES: dict[str, dict[str, str]] = {
    "megatron.core.dist_checkpointing.strategies.filesystem_async": {
        # preloads tensors to CPU with non_blocking=True, then synchronises the CUDA stream
        "FileSystemWriterAsync.preload_tensors": "torch.cuda.synchronize()",
    },
    "megatron.core.dist_checkpointing.strategies.state_dict_saver": {
        # all-reduces "may the cached save plan be reused?" as a CUDA int tensor
        "verify_global_md_reuse": "device='cuda'",
        # broadcasts "did any rank fail to write?" from a tensor on the current CUDA device
        "save_state_dict_async_finalize": "device=torch.cuda.current_device()",
    },
}

# method -> the CUDA expression in it: `Tensor.cuda` is the identity while the method runs (the tensors it
# moves are CPU tensors that gloo gathers where they are). Not thread-safe; checkpoint saves are not concurrent.
CUDA_IDENTITY_SITES: dict[str, str] = {
    # the distributed optimizer's fully_reshardable save all-gathers every moment over data-parallel ranks
    "megatron.core.optimizer.distrib_optimizer.DistributedOptimizer.get_parameter_state_dp_zero": "send_tensor.cuda()",
}

_FACTORIES = ("tensor", "zeros", "ones", "empty", "full", "arange", "zeros_like", "empty_like", "ones_like")


def _cpu_device(device):
    is_cuda = (isinstance(device, str) and device.startswith("cuda")) or (
        isinstance(device, torch.device) and device.type == "cuda"
    )
    return "cpu" if is_cuda or isinstance(device, int) else device


def _on_cpu(factory):
    @functools.wraps(factory)
    def make(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        return factory(*args, **kwargs)

    return make


class _CpuCuda(types.SimpleNamespace):
    """torch.cuda as seen by a patched module: synchronise is a no-op, the current device is the CPU."""

    def __getattr__(self, name):
        return getattr(torch.cuda, name)


class _CpuTorch(types.ModuleType):
    """torch as seen by a patched module."""

    def __getattr__(self, name):
        return getattr(torch, name)


def _proxy() -> _CpuTorch:
    proxy = _CpuTorch("torch")
    for name in _FACTORIES:
        setattr(proxy, name, _on_cpu(getattr(torch, name)))
    proxy.cuda = _CpuCuda(synchronize=lambda *a, **k: None, current_device=lambda: "cpu")
    return proxy


def resolve(dotted: str):
    """(owner, attribute name) of a dotted module.Class.method path."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise ImportError(dotted)


def _cuda_is_identity(method):
    @functools.wraps(method)
    def run(*args, **kwargs):
        original = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self
        try:
            return method(*args, **kwargs)
        finally:
            torch.Tensor.cuda = original

    run.__bitcpm_cpu_shim__ = True
    return run


def needed() -> bool:
    """The patches apply only where CUDA is absent."""
    return not torch.cuda.is_available()


def apply() -> None:
    """Patch the modules in SITES (idempotent; a no-op where CUDA is present)."""
    if not needed():
        return
    proxy = _proxy()
    for module_name in SITES:
        module = importlib.import_module(module_name)
        if not isinstance(module.torch, _CpuTorch):
            module.torch = proxy
    for dotted in CUDA_IDENTITY_SITES:
        owner, name = resolve(dotted)
        method = getattr(owner, name)
        if not getattr(method, "__bitcpm_cpu_shim__", False):
            setattr(owner, name, _cuda_is_identity(method))
