"""CPU backend (gloo): megatron-core's model *and* engine run here with a small shim for its CUDA calls.

megatron-core 0.16 hard-codes CUDA in places that have nothing to do with the arithmetic: it asks
torch.cuda for the current device and RNG states, makes scalar flags with device="cuda", opens CUDA
streams around communication, and checks `param.type() == 'torch.cuda.FloatTensor'`. Every patch below
names the megatron function it serves (PATCH_SITES); tests/unit/test_cpu_shim.py reads those functions'
source and fails when a megatron upgrade moves one. Nothing is patched when CUDA is present.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import types
from collections.abc import Callable, Iterator

import torch

_M = "megatron.core."
_OPT, _CLIP, _SCALER, _DIST_OPT = (
    _M + "optimizer." + m for m in ("optimizer", "clip_grads", "grad_scaler", "distrib_optimizer")
)
_SCHED, _P2P = _M + "pipeline_parallel.schedules", _M + "pipeline_parallel.p2p_communication"
_BUF, _LM = _M + "distributed.param_and_grad_buffer", _M + "models.common.language_module.language_module"

# (module, function, text its source must contain, patch): the megatron call sites each patch serves.
PATCH_SITES: tuple[tuple[str, str, str, str], ...] = (
    # "proxy": the module's `torch` maps device="cuda" factories to CPU and makes CUDA streams no-ops.
    (_OPT, "MixedPrecisionOptimizer.__init__", "device='cuda'", "proxy"),
    (_OPT, "FP32Optimizer.__init__", "device='cuda'", "proxy"),
    (_CLIP, "get_grad_norm_fp32", "device='cuda'", "proxy"),
    (_CLIP, "clip_grad_by_total_norm_fp32", "device='cuda'", "proxy"),
    (_CLIP, "count_zeros_fp32", "device='cuda'", "proxy"),
    (_SCALER, "MegatronGradScaler.__init__", "device='cuda'", "proxy"),
    (_SCALER, "DynamicGradScaler.__init__", "device='cuda'", "proxy"),
    (_M + "utils", "local_multi_tensor_l2_norm", 'device="cuda"', "proxy"),
    (_SCHED, "forward_backward_no_pipelining", 'device="cuda"', "proxy"),
    (_SCHED, "forward_backward_pipelining_with_interleaving", 'device="cuda"', "proxy"),
    (_SCHED, "forward_backward_pipelining_without_interleaving", 'device="cuda"', "proxy"),
    (_P2P, "P2PCommunicator._communicate", "torch.cuda.synchronize()", "proxy"),
    (_BUF, "_ParamAndGradBucketGroup.start_grad_sync", "torch.cuda", "proxy"),
    # Not patched, relied on: the unbatched p2p path (see transformer_config_overrides).
    (_P2P, "_p2p_ops", "group.rank() % 2 == 0", "relied-on"),
    # "type-names": Tensor.type() answers CUDA names while these run (megatron's dtype checks).
    (_OPT, "Float16OptimizerWithFloat16Params.__init__", "torch.cuda.BFloat16Tensor", "type-names"),
    (_DIST_OPT, "DistributedOptimizer.__init__", "torch.cuda.BFloat16Tensor", "type-names"),
    (_CLIP, "clip_grad_by_total_norm_fp32", "torch.cuda.FloatTensor", "type-names"),
    # "cuda-identity": Tensor.cuda() returns the tensor while the tied embedding is shared across stages.
    (_LM, "LanguageModule.setup_embeddings_and_output_layer", ".cuda()", "cuda-identity"),
)
# DistributedOptimizer.__init__ reaches its other type() check through this static method (covered by the wrap).
NESTED_SITES = ((_DIST_OPT, "DistributedOptimizer._build_model_and_main_param_groups", "torch.cuda.BFloat16Tensor"),)

# Modules whose module-level name `torch` is rebound to the CPU proxy (the sites above live in them).
PROXIED_MODULES = (
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
)

_FACTORIES = ("tensor", "zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint", "as_tensor")
_CPU = torch.device("cpu")


def _on_cpu(device):
    """A CUDA device (name, torch.device or ordinal) becomes the CPU; anything else is kept."""
    if device is None:
        return None
    if isinstance(device, int) or torch.device(device).type == "cuda":
        return _CPU
    return device


def _cpu_factory(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def make(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _on_cpu(kwargs["device"])
        kwargs.pop("pin_memory", None)
        return fn(*args, **kwargs)

    return make


class _NoStream:
    """A CUDA stream/event stand-in: every method is a no-op (CPU work is synchronous)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __getattr__(self, name: str):
        return lambda *a, **k: None


class _CudaOnCPU(types.ModuleType):
    """torch.cuda as megatron's engine sees it on CPU: streams and synchronisation are no-ops."""

    Stream = _NoStream
    Event = _NoStream

    def __init__(self) -> None:
        super().__init__("torch.cuda")

    def __getattr__(self, name: str):
        return getattr(torch.cuda, name)

    @staticmethod
    @contextlib.contextmanager
    def stream(_stream=None) -> Iterator[None]:
        yield

    @staticmethod
    def current_stream(*_a, **_k) -> _NoStream:
        return _NoStream()

    default_stream = current_stream

    @staticmethod
    def synchronize(*_a, **_k) -> None:
        return None

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def current_device() -> str:
        return "cpu"


class _TorchOnCPU(types.ModuleType):
    """`torch` for the proxied megatron modules: factories map CUDA to CPU; the rest is torch itself."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.cuda = _CudaOnCPU()
        for name in _FACTORIES:
            setattr(self, name, _cpu_factory(getattr(torch, name)))

    def __getattr__(self, name: str):
        return getattr(torch, name)


@contextlib.contextmanager
def _cuda_type_names() -> Iterator[None]:
    """Tensor.type() answers 'torch.cuda.<Type>' for CPU tensors (megatron's dtype checks want CUDA names)."""
    original = torch.Tensor.type

    def cuda_type(self, *args, **kwargs):
        name = original(self, *args, **kwargs)
        if args or kwargs or not isinstance(name, str) or ".cuda." in name:
            return name
        return name.replace("torch.", "torch.cuda.", 1)

    torch.Tensor.type = cuda_type  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.type = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _cuda_is_identity() -> Iterator[None]:
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def _during(context: Callable, fn: Callable) -> Callable:
    if getattr(fn, "_bitcpm_cpu_shim", False):
        return fn

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with context():
            return fn(*args, **kwargs)

    wrapped._bitcpm_cpu_shim = True  # type: ignore[attr-defined]
    return wrapped


def _wrap(module_name: str, qualname: str, context: Callable) -> None:
    owner = importlib.import_module(module_name)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, attr, _during(context, getattr(owner, attr)))


def _patch_engine() -> None:
    """Module-level torch proxies, and the two Tensor-method patches scoped to the functions that need them."""
    proxy = _TorchOnCPU()
    for name in PROXIED_MODULES:
        importlib.import_module(name).torch = proxy
    contexts = {"type-names": _cuda_type_names, "cuda-identity": _cuda_is_identity}
    for module_name, qualname, _needle, patch in PATCH_SITES:
        if patch in contexts:
            _wrap(module_name, qualname, contexts[patch])
    # optimizer.py imported clip_grad_by_total_norm_fp32 by name: rebind that name to the wrapped function.
    clip_grads = importlib.import_module("megatron.core.optimizer.clip_grads")
    importlib.import_module(
        "megatron.core.optimizer.optimizer"
    ).clip_grad_by_total_norm_fp32 = clip_grads.clip_grad_by_total_norm_fp32


def transformer_config_overrides() -> dict:
    """TransformerConfig fields this backend needs (applied by bitcpm.training.build).

    batch_p2p_comm=False: gloo matches point-to-point messages between two ranks first-in first-out, so
    megatron's batched ops (every rank posts send-prev, recv-prev, send-next, recv-next) swap the activation
    and the gradient when prev and next are the same peer (pp=2 with interleaving). megatron's unbatched
    `_p2p_ops` orders sends and receives by rank parity and uses separate groups per direction.
    """
    if torch.cuda.is_available():
        return {}
    return {"batch_p2p_comm": False}


def prepare() -> None:
    """Nothing must precede megatron's import on CPU; keep torch's threads to the cores we were given."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def device(local_rank: int) -> torch.device:
    """All ranks compute on the CPU."""
    return torch.device("cpu")


def after_process_group() -> None:
    """Install the CPU shim (idempotent; nothing is patched where CUDA is present)."""
    if torch.cuda.is_available():
        return
    import megatron.core.tensor_parallel.random as mcore_random

    # Served: RotaryEmbedding.get_emb, GlobalMemoryBuffer.get_tensor, tensor-parallel all-gathers (device
    # of their buffers), and CudaRNGStatesTracker.add / fork (model_parallel_cuda_manual_seed, recompute).
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.manual_seed = lambda seed: torch.manual_seed(seed)
    mcore_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mcore_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)
    # The shimmed tracker warns on every dropout call that the CPU RNG moved inside the "GPU" context.
    logging.getLogger("megatron.core.tensor_parallel.random").setLevel(logging.ERROR)
    _patch_engine()


def synchronize() -> None:
    """CPU work is synchronous."""


def peak_memory_bytes() -> int | None:
    """Peak resident set size of this process."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
