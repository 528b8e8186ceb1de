"""Ternary quantizer against a plain per-group reference; STE gradients; activation fake-quant."""

from __future__ import annotations

import pytest
import torch

from bitcpm.quant.ternary import activation_fake_quant, straight_through, ternary_quantize

pytestmark = pytest.mark.quick


def reference_ternary(w: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """Straight from the BitCPM-CANN formula, one group at a time."""
    out = torch.empty_like(w)
    rows, cols = w.shape
    g = cols if group_size == -1 else group_size
    for r in range(rows):
        for start in range(0, cols, g):
            block = w[r, start : start + g]
            s = max(block.abs().mean().item(), eps)
            out[r, start : start + g] = torch.clamp(torch.round(block / s), -1, 1) * s
    return out


@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
def test_matches_reference(group_size: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(24, 256) * 0.05
    q = ternary_quantize(w, group_size, 1e-5)
    torch.testing.assert_close(q, reference_ternary(w, group_size, 1e-5), rtol=0, atol=1e-7)


def test_values_are_ternary_times_group_scale() -> None:
    torch.manual_seed(1)
    w = torch.randn(8, 128)
    q = ternary_quantize(w, 32, 1e-5).reshape(8, 4, 32)
    scales = w.reshape(8, 4, 32).abs().mean(-1, keepdim=True)
    levels = q / scales
    assert set(torch.unique(torch.round(levels)).tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(levels, torch.round(levels))


def test_zero_group_uses_eps_and_stays_zero() -> None:
    w = torch.zeros(2, 64)
    w[1] = 1.0
    q = ternary_quantize(w, 32, 1e-5)
    assert torch.all(q[0] == 0)
    torch.testing.assert_close(q[1], torch.ones(64))


def test_ste_passes_gradient_unchanged() -> None:
    torch.manual_seed(2)
    w = torch.randn(16, 64, requires_grad=True)
    upstream = torch.randn(16, 64)
    out = straight_through(w, ternary_quantize(w, 32, 1e-5))  # as the converter composes them
    (out * upstream).sum().backward()
    torch.testing.assert_close(w.grad, upstream)
    torch.testing.assert_close(out.detach(), ternary_quantize(w.detach(), 32, 1e-5))


def test_ste_through_a_matmul_equals_reference_gradient() -> None:
    torch.manual_seed(3)
    w = torch.randn(8, 64, requires_grad=True)
    x = torch.randn(5, 64)
    (x @ straight_through(w, ternary_quantize(w, 64, 1e-5)).t()).pow(2).sum().backward()
    wq = reference_ternary(w.detach(), 64, 1e-5)
    expected = 2 * (x @ wq.t()).t() @ x  # d/dW of ||x Wq^T||^2 with dWq/dW = I
    torch.testing.assert_close(w.grad, expected, rtol=1e-5, atol=1e-5)


def test_activation_fake_quant_levels_and_ste() -> None:
    torch.manual_seed(4)
    x = torch.randn(3, 7, 32, requires_grad=True)
    y = activation_fake_quant(x, 8, None)
    scale = x.detach().abs().amax(-1, keepdim=True) / 127
    levels = y.detach() / scale
    torch.testing.assert_close(levels, torch.round(levels), rtol=0, atol=1e-4)
    assert (y.detach() - x.detach()).abs().max() <= scale.max() / 2 + 1e-6
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
