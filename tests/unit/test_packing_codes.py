"""Packed ternary: 2-bit and 5-trits-per-byte codes and the 12-bit bf16 scales round-trip exactly."""

from __future__ import annotations

import pytest
import torch

from bitcpm.export.packed import pack_codes, pack_scales, unpack_codes, unpack_scales

pytestmark = pytest.mark.quick


@pytest.mark.parametrize("bits", ["2", "1.6"])
@pytest.mark.parametrize("count", [1, 4, 5, 7, 1000, 1003])
def test_codes_round_trip(bits: str, count: int) -> None:
    codes = torch.randint(0, 3, (count,), generator=torch.Generator().manual_seed(count), dtype=torch.int8)
    packed = pack_codes(codes, bits)
    per = 4 if bits == "2" else 5
    assert packed.dtype == torch.uint8 and packed.numel() == -(-count // per)
    assert torch.equal(unpack_codes(packed, bits, count), codes)


def test_five_trits_fill_a_byte_in_base_three() -> None:
    codes = torch.tensor([2, 2, 2, 2, 2, 0, 1, 0, 0, 0], dtype=torch.int8)
    assert pack_codes(codes, "1.6").tolist() == [242, 3]


@pytest.mark.parametrize("binades", [1, 15, 40])  # exponents spanning 16 or more binades need byte offsets
def test_bf16_scales_round_trip(binades: int) -> None:
    g = torch.Generator().manual_seed(0)
    exponents = torch.linspace(-20, -20 + binades - 1e-3, 37 * 3)[torch.randperm(37 * 3, generator=g)]
    scales = (2.0**exponents * (1 + torch.rand(37 * 3, generator=g))).reshape(37, 3).to(torch.bfloat16).float()
    tensors, base = pack_scales(scales, "w")
    wide = "w.scale_exponent8" in tensors
    assert wide == (binades >= 16)
    assert torch.equal(unpack_scales(tensors, "w", base, [37, 3]), scales.to(torch.bfloat16))
    bits = sum(t.numel() * t.element_size() * 8 for t in tensors.values()) / scales.numel()
    assert bits <= (16 if wide else 12.5)
