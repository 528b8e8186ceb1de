"""The dist_checkpointing CPU shim patches sites that still exist, and only inside megatron's modules."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from bitcpm.backends import cpu_checkpoint_shim as shim

pytestmark = pytest.mark.quick

MODULE_SITES = [(m, f, e) for m, sites in shim.SITES.items() for f, e in sites.items()]


def _source(obj) -> str:
    return inspect.getsource(inspect.unwrap(obj))


@pytest.mark.parametrize(("module_name", "function", "expression"), MODULE_SITES)
def test_module_site_still_exists(module_name: str, function: str, expression: str) -> None:
    module = importlib.import_module(module_name)
    obj = module
    for part in function.split("."):
        assert hasattr(obj, part), f"megatron moved {module_name}.{function}: recheck bitcpm's CPU checkpoint shim"
        obj = getattr(obj, part)
    assert expression in _source(obj), f"{module_name}.{function} no longer contains {expression!r}: recheck the shim"
    assert "torch" in vars(module), f"{module_name} no longer imports torch at module level"


@pytest.mark.parametrize(("dotted", "expression"), list(shim.CUDA_IDENTITY_SITES.items()))
def test_method_site_still_exists(dotted: str, expression: str) -> None:
    owner, name = shim.resolve(dotted)
    assert hasattr(owner, name), f"megatron moved {dotted}: recheck bitcpm's CPU checkpoint shim"
    assert expression in _source(getattr(owner, name)), f"{dotted} no longer contains {expression!r}"


def test_writer_results_queue_still_a_module_global() -> None:
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    assert hasattr(filesystem_async, "_results_queue") and hasattr(filesystem_async, "_get_write_results_queue")
    assert "_results_queue" in _source(filesystem_async._get_write_results_queue)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the shim applies only where CUDA is absent")
def test_patched_modules_see_a_cpu_torch_and_torch_itself_is_untouched() -> None:
    shim.apply()
    shim.apply()  # idempotent
    for module_name in shim.SITES:
        patched = importlib.import_module(module_name).torch
        assert patched.zeros(2, device="cuda").device.type == "cpu"
        assert patched.tensor([1], dtype=torch.int, device=patched.cuda.current_device()).device.type == "cpu"
        patched.cuda.synchronize()  # a no-op instead of "Torch not compiled with CUDA enabled"
        assert patched.float32 is torch.float32 and patched.distributed is torch.distributed
    with pytest.raises((AssertionError, RuntimeError)):
        torch.cuda.synchronize()
    owner, name = shim.resolve(next(iter(shim.CUDA_IDENTITY_SITES)))
    assert getattr(getattr(owner, name), "__bitcpm_cpu_shim__", False)
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(1).cuda()  # Tensor.cuda is only the identity while the patched method runs
