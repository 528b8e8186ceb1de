"""Quantizer kernels (eager, torch.compile, Triton) and the exact-value STE against the reference math."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import torch

from bitcpm.quant.kernels import local_quantizer, quantize_weight, resolve_kernel
from bitcpm.quant.ternary import quantize_local, straight_through, ternary_quantize

pytestmark = pytest.mark.quick


def reference_ternary(w: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """BitCPM-CANN's formula one group at a time, in fp32, cast back to the weight's dtype."""
    rows, cols = w.shape
    g = cols if group_size == -1 else group_size
    out = torch.empty(rows, cols, dtype=torch.float32)
    for r in range(rows):
        for start in range(0, cols, g):
            block = w[r, start : start + g].float()
            s = torch.clamp_min(block.abs().mean(), eps)
            out[r, start : start + g] = torch.clamp(torch.round(block / s), -1, 1) * s
    return out.to(w.dtype)


def levels_and_scales(q: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split W_q into its ternary codes and per-group scales (the largest |value| of each group)."""
    rows, cols = q.shape
    g = cols if group_size == -1 else group_size
    grouped = q.float().reshape(rows, cols // g, g)
    scales = grouped.abs().amax(-1, keepdim=True)
    return torch.sign(grouped), scales


def weights(dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    w = torch.randn(16, 256) * 0.05
    w[3, :64] = 0.0  # an all-zero group exercises eps
    return w.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group_size", [32, 128, -1])
def test_eager_equals_reference_bitwise(dtype: torch.dtype, group_size: int) -> None:
    w = weights(dtype)
    assert torch.equal(quantize_local(w, group_size, 1e-5), reference_ternary(w, group_size, 1e-5))
    assert torch.equal(quantize_weight(w, group_size, 1e-5, kernel="auto"), quantize_local(w, group_size, 1e-5))


def test_straight_through_value_is_exactly_wq_and_gradient_is_identity() -> None:
    w = weights(torch.bfloat16).requires_grad_(True)
    ref_w = w.detach().clone().requires_grad_(True)
    q = ternary_quantize(w, 32, 1e-5)
    out = straight_through(w, q)
    assert torch.equal(out, q)
    upstream = torch.randn(w.shape).to(torch.bfloat16)
    (out.float() * upstream.float()).sum().backward()
    # The textbook form W + stopgrad(W_q - W): same gradient bit for bit.
    written_out = ref_w + (ternary_quantize(ref_w, 32, 1e-5) - ref_w).detach()
    (written_out.float() * upstream.float()).sum().backward()
    assert torch.equal(w.grad, ref_w.grad)
    assert torch.equal(w.grad, upstream)


def test_no_host_reads_meta_tensors_pass_through() -> None:
    # Meta tensors have no data: any .item(), bool(tensor) or data-dependent branch would raise here.
    w = torch.empty(8, 64, device="meta", requires_grad=True)
    out = straight_through(w, quantize_weight(w, 32, 1e-5, kernel="auto"))
    assert out.device.type == "meta" and out.shape == w.shape
    out.sum().backward()
    assert w.grad is not None and w.grad.shape == w.shape


def test_kernel_resolution() -> None:
    assert resolve_kernel("auto", "cuda") == "compile"
    assert resolve_kernel("auto", "cpu") == "eager"
    assert resolve_kernel("auto", "npu") == "eager"
    assert resolve_kernel("compile", "cpu") == "compile"
    with pytest.raises(ValueError, match="quant.kernel=fused"):
        resolve_kernel("fused", "cpu")


def test_triton_refused_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="quant.kernel=triton needs CUDA"):
        resolve_kernel("triton", "cpu")


@pytest.mark.skipif(importlib.util.find_spec("triton") is not None, reason="triton is installed")
def test_triton_without_the_package_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="quant.kernel=triton needs the triton package"):
        local_quantizer("triton")


@pytest.mark.slow  # the first torch.compile of a process takes ~10 s on a cold CPU cache
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_kernel_matches_eager(dtype: torch.dtype) -> None:
    compiled = local_quantizer("compile")
    for group_size in (32, -1):
        w = weights(dtype, seed=5)
        got, want = compiled(w, group_size, 1e-5), quantize_local(w, group_size, 1e-5)
        assert got.dtype == want.dtype
        got_levels, got_scales = levels_and_scales(got, group_size)
        want_levels, want_scales = levels_and_scales(want, group_size)
        assert torch.equal(got_levels, want_levels)
        # A fused reduction sums each group in another order: a couple of ulps of the fp32 scale (bf16
        # rounding of the product can then hide or show that ulp).
        torch.testing.assert_close(got_scales, want_scales, rtol=2**-21 if dtype == torch.float32 else 2**-7, atol=0)


def _triton_module(monkeypatch: pytest.MonkeyPatch):
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when the kernel is decorated: import afresh
    sys.modules.pop("bitcpm.quant.triton_ternary", None)
    try:
        return importlib.import_module("bitcpm.quant.triton_ternary")
    finally:
        sys.modules.pop("bitcpm.quant.triton_ternary", None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernel_matches_eager_in_interpreter(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    module = _triton_module(monkeypatch)
    for group_size in (32, -1):
        w = weights(dtype, seed=6)
        w[5, 7] = float("nan")  # NaN must propagate to its group as in torch
        got, want = module.quantize_triton(w, group_size, 1e-5), quantize_local(w, group_size, 1e-5)
        assert torch.equal(got.isnan(), want.isnan())
        got, want = got.nan_to_num(), want.nan_to_num()
        assert torch.equal(levels_and_scales(got, group_size)[0], levels_and_scales(want, group_size)[0])
        torch.testing.assert_close(got, want, rtol=2**-21 if dtype == torch.float32 else 2**-7, atol=0)


def test_half_rounds_to_zero_like_torch_round(monkeypatch: pytest.MonkeyPatch) -> None:
    # |w| / s == 0.5 exactly: torch.round gives 0 (half to even); the Triton level select must too.
    w = torch.tensor([[1.0, 3.0, 0.0, 0.0], [-1.0, -3.0, 0.0, 0.0]])  # s = 1.0 -> x = 1, 3
    w2 = torch.tensor([[1.0, 1.0, 1.0, 5.0]])  # s = 2.0 -> x = 0.5 (-> 0), 2.5 (-> 1)
    assert torch.equal(quantize_local(w2, -1, 1e-5), torch.tensor([[0.0, 0.0, 0.0, 2.0]]))
    assert torch.equal(quantize_local(w, -1, 1e-5), torch.tensor([[1.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]))
    if importlib.util.find_spec("triton") is not None:
        module = _triton_module(monkeypatch)
        assert torch.equal(module.quantize_triton(w2, -1, 1e-5), quantize_local(w2, -1, 1e-5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kernel", ["compile", "triton"])
def test_cuda_kernels_match_eager(kernel: str) -> None:
    if kernel == "triton" and importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    w = weights(torch.bfloat16, seed=7).cuda()
    got = quantize_weight(w, 128, 1e-5, kernel=kernel)
    want = quantize_local(w, 128, 1e-5)
    assert torch.equal(levels_and_scales(got, 128)[0], levels_and_scales(want, 128)[0])
    torch.testing.assert_close(got, want, rtol=2**-7, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_quantizer_never_synchronises() -> None:
    w = weights(torch.bfloat16, seed=8).cuda().requires_grad_(True)
    quantize_weight(w, 128, 1e-5, kernel="compile")  # compile outside the check
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = straight_through(w, quantize_weight(w, 128, 1e-5, kernel="compile"))
        out.float().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
