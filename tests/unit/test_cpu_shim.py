"""The CPU shim's patch sites still exist in the installed megatron-core (fails loudly on an upgrade that moves one)."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from bitcpm.backends import cpu

pytestmark = pytest.mark.quick


def _source(module_name: str, qualname: str) -> str:
    owner = importlib.import_module(module_name)
    for part in qualname.split("."):
        owner = getattr(owner, part)
    return inspect.getsource(inspect.unwrap(owner))


@pytest.mark.parametrize(("module", "qualname", "needle", "patch"), cpu.PATCH_SITES, ids=lambda v: str(v))
def test_patched_site_still_has_its_cuda_call(module: str, qualname: str, needle: str, patch: str) -> None:
    text = _source(module, qualname)
    assert needle in text, (
        f"megatron upgrade: {module}.{qualname} no longer contains {needle!r}; re-check the CPU shim ({patch})"
    )
    if patch == "proxy":
        assert module in cpu.PROXIED_MODULES, f"{module} holds a proxy site but its torch is not proxied"


@pytest.mark.parametrize(("module", "qualname", "needle"), cpu.NESTED_SITES)
def test_nested_site_still_exists(module: str, qualname: str, needle: str) -> None:
    assert needle in _source(module, qualname)


def test_proxy_maps_cuda_factories_and_streams_to_cpu() -> None:
    proxy = cpu._TorchOnCPU()
    for device in ("cuda", torch.device("cuda"), 0, "cpu"):
        assert proxy.zeros(2, device=device).device.type == "cpu"
    assert proxy.tensor([1.0], device="cuda", pin_memory=True).device.type == "cpu"
    with proxy.cuda.stream(proxy.cuda.Stream()):
        proxy.cuda.current_stream().wait_stream(proxy.cuda.default_stream())
    proxy.cuda.synchronize()
    assert proxy.float32 is torch.float32 and proxy.Tensor is torch.Tensor


def test_tensor_methods_are_patched_only_inside_the_scope() -> None:
    t = torch.zeros(1, dtype=torch.bfloat16)
    with cpu._cuda_type_names():
        assert t.type() == "torch.cuda.BFloat16Tensor"
        assert t.type(torch.float32).dtype == torch.float32
    assert t.type() == "torch.BFloat16Tensor"
    with cpu._cuda_is_identity():
        assert t.cuda() is t
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):
            t.cuda()
