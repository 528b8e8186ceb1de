"""TEMPORARY: the minimum CPU shim for megatron's DDP, optimizer and schedules (feasibility §2b).

The engine stream owns the real one (bitcpm/backends/cpu.py); this copy only lets the checkpoint tests
build megatron's engine until that lands, and is deleted then.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import types

import torch

_FACTORIES = {"tensor", "zeros", "ones", "empty", "full", "arange", "zeros_like", "empty_like", "ones_like"}
_MODULES = [
    "megatron.core.utils",
    "megatron.core.optimizer.optimizer",
    "megatron.core.optimizer.clip_grads",
    "megatron.core.optimizer.distrib_optimizer",
    "megatron.core.optimizer.grad_scaler",
    "megatron.core.distributed.param_and_grad_buffer",
    "megatron.core.distributed.distributed_data_parallel",
    "megatron.core.distributed.finalize_model_grads",
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.pipeline_parallel.p2p_communication",
    "megatron.core.pipeline_parallel.utils",
]


def _cpu(device):
    if device is None:
        return None
    if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda")):
        return "cpu"
    if isinstance(device, torch.device) and device.type == "cuda":
        return "cpu"
    return device


def _factory(fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return fn(*args, **kwargs)

    return wrapped


class _Cuda(types.SimpleNamespace):
    def __getattr__(self, name):
        return getattr(torch.cuda, name)


_cuda = _Cuda(
    Stream=lambda *a, **k: None,
    Event=lambda *a, **k: types.SimpleNamespace(record=lambda *a, **k: None, wait=lambda *a, **k: None),
    stream=lambda *a, **k: contextlib.nullcontext(),
    current_stream=lambda *a, **k: types.SimpleNamespace(wait_stream=lambda *a: None, wait_event=lambda *a: None),
    synchronize=lambda *a, **k: None,
    empty_cache=lambda *a, **k: None,
)


class _Torch(types.ModuleType):
    def __getattr__(self, name):
        attr = getattr(torch, name)
        return _factory(attr) if name in _FACTORIES else attr


_proxy = _Torch("torch")
_proxy.cuda = _cuda
_CUDA_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
}


def _with_cuda_type_names(fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        original = torch.Tensor.type

        def type_(self, *a, **k):
            name = original(self, *a, **k)
            return _CUDA_NAMES.get(name, name) if not a and not k else name

        torch.Tensor.type = type_
        try:
            return fn(*args, **kwargs)
        finally:
            torch.Tensor.type = original

    return wrapped


def _identity_cuda(fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        original = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self
        try:
            return fn(*args, **kwargs)
        finally:
            torch.Tensor.cuda = original

    return wrapped


_applied = False


def apply() -> None:
    """Patch megatron's engine modules for CPU (idempotent)."""
    global _applied
    if _applied or torch.cuda.is_available():
        return
    _applied = True
    for name in _MODULES:
        importlib.import_module(name).torch = _proxy
    from megatron.core.models.common.language_module import language_module as lm
    from megatron.core.optimizer import clip_grads, distrib_optimizer, optimizer

    optimizer.Float16OptimizerWithFloat16Params.__init__ = _with_cuda_type_names(
        optimizer.Float16OptimizerWithFloat16Params.__init__
    )
    distrib_optimizer.DistributedOptimizer.__init__ = _with_cuda_type_names(
        distrib_optimizer.DistributedOptimizer.__init__
    )
    clipped = _with_cuda_type_names(clip_grads.clip_grad_by_total_norm_fp32)
    clip_grads.clip_grad_by_total_norm_fp32 = clipped
    optimizer.clip_grad_by_total_norm_fp32 = clipped
    lm.LanguageModule.setup_embeddings_and_output_layer = _identity_cuda(
        lm.LanguageModule.setup_embeddings_and_output_layer
    )
