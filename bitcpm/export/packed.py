"""`export packed`: trits packed 2 bits (4 per byte) or 1.6 bits (5 per byte, base 3) + per-group scales.

One safetensors file in the `minicpm` layout (muP constants in the metadata). Each quantized projection P is
`P.trits` (uint8, codes trit + 1, row-major) and its scales; everything else (embeddings, norms, head) is
stored as it is in the bf16 HF export. The scales are bf16, the precision of the default HF export, so
unpacking gives that export's tensors bit for bit (trits x bf16 scale: multiplying by -1/0/1 is exact).
A bf16 scale is sign 0 + 8-bit exponent + 7-bit mantissa: stored as the mantissa byte plus the exponent's
offset from the tensor's smallest (a 4-bit nibble when the exponents span < 16 binades, else a byte), which
is 12 bits per group: 1.6 + 12/128 = 1.69 bits per weight at g128. `--scale-dtype fp32` keeps fp32 scales
(bit-exact against the fp32 export instead).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bitcpm.export.source import Source
from bitcpm.export.weights import fake_quantized_state, split_to_hf, ternary_state

FORMAT = "bitcpm-ternary-packed-v1"
_TRITS_PER_BYTE = {"2": 4, "1.6": 5}


def pack_codes(codes: torch.Tensor, bits: str) -> torch.Tensor:
    """uint8 bytes of a flat tensor of codes in {0, 1, 2}."""
    per = _TRITS_PER_BYTE[bits]
    flat = codes.reshape(-1).to(torch.int32)
    pad = (-flat.numel()) % per
    flat = torch.cat([flat, torch.ones(pad, dtype=torch.int32)]).reshape(-1, per)
    weights = [4**j for j in range(per)] if bits == "2" else [3**j for j in range(per)]
    return (flat * torch.tensor(weights, dtype=torch.int32)).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: str, count: int) -> torch.Tensor:
    """The first `count` codes of packed bytes (int8)."""
    per = _TRITS_PER_BYTE[bits]
    base = 4 if bits == "2" else 3
    value = packed.to(torch.int32)
    out = []
    for _ in range(per):
        out.append(value % base)
        value = value // base
    return torch.stack(out, dim=1).reshape(-1)[:count].to(torch.int8)


def pack_scales(scales: torch.Tensor, name: str) -> tuple[dict[str, torch.Tensor], int]:
    """bf16 scales as mantissa bytes + exponent offsets (nibbles when they fit); returns (tensors, base)."""
    bits = scales.to(torch.bfloat16).view(torch.int16).to(torch.int32) & 0xFFFF
    exponent, mantissa = (bits >> 7) & 0xFF, bits & 0x7F
    base = int(exponent.min())
    offset = (exponent - base).reshape(-1)
    out = {f"{name}.scale_mantissa": mantissa.to(torch.uint8)}
    if int(offset.max()) < 16:
        padded = torch.cat([offset, torch.zeros(offset.numel() % 2, dtype=offset.dtype)]).reshape(-1, 2)
        out[f"{name}.scale_exponent4"] = (padded[:, 0] | (padded[:, 1] << 4)).to(torch.uint8)
    else:
        out[f"{name}.scale_exponent8"] = offset.to(torch.uint8)
    return out, base


def unpack_scales(tensors: dict[str, torch.Tensor], name: str, base: int, shape: list[int]) -> torch.Tensor:
    """bf16 scales of `shape` from pack_scales' tensors."""
    mantissa = tensors[f"{name}.scale_mantissa"].to(torch.int32)
    count = mantissa.numel()
    if f"{name}.scale_exponent4" in tensors:
        nibbles = tensors[f"{name}.scale_exponent4"].to(torch.int32)
        offset = torch.stack([nibbles & 0xF, nibbles >> 4], dim=1).reshape(-1)[:count]
    else:
        offset = tensors[f"{name}.scale_exponent8"].to(torch.int32)
    bits = ((offset.reshape(mantissa.shape) + base) << 7) | mantissa
    return bits.to(torch.int16).view(torch.bfloat16).reshape(shape)


def reference_tensors(source: Source, scale_dtype: str) -> dict[str, torch.Tensor]:
    """What unpacking must give: the minicpm-layout HF export in the scales' dtype."""
    from bitcpm.models.minicpm.hf_layout import to_hf

    dtype = torch.bfloat16 if scale_dtype == "bf16" else torch.float32
    return {k: v.to(dtype) for k, v in to_hf(fake_quantized_state(source.model), source.job.model, "minicpm").items()}


def write_packed(source: Source, out: Path, bits: str, scale_dtype: str = "bf16") -> str:
    """Write the packed file; returns a one-line size report (bits per weight including scales)."""
    from safetensors.torch import save_file

    if not source.job.quant.enabled:  # nothing would be packed (the command line refuses such a run first)
        raise ValueError(f"export packed: {source.run_dir} is a full-precision run: it has no ternary weights")
    cfg = source.job.model
    dtype = torch.bfloat16 if scale_dtype == "bf16" else torch.float32
    tensors = dict(reference_tensors(source, scale_dtype))
    shapes, bases, quant_weights, quant_bytes = {}, {}, 0, 0
    print(f"export packed: packing {source.checkpoint} ({bits} bits per trit, {scale_dtype} scales)", flush=True)
    for name, parts in ternary_state(source.model).items():
        for hf_name, piece in split_to_hf(name, parts, cfg).items():
            del tensors[hf_name]
            packed = {f"{hf_name}.trits": pack_codes(piece.trits + 1, bits)}
            if scale_dtype == "bf16":
                scale_tensors, bases[hf_name] = pack_scales(piece.scales, hf_name)
                packed |= scale_tensors
            else:
                packed[f"{hf_name}.scales"] = piece.scales.to(dtype)
            shapes[hf_name] = [list(piece.trits.shape), list(piece.scales.shape)]
            quant_weights += piece.trits.numel()
            quant_bytes += sum(t.numel() * t.element_size() for t in packed.values())
            tensors |= packed
    meta = {
        "format": FORMAT,
        "bits": bits,
        "scale_dtype": scale_dtype,
        "group_size": str(source.job.quant.group_size),
        "shapes": json.dumps(shapes),
        "scale_exponent_base": json.dumps(bases),
        "scale_emb": str(cfg.scale_emb),
        "scale_depth": str(cfg.scale_depth),
        "dim_model_base": str(cfg.dim_model_base),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out), metadata=meta)
    bpw = 8 * quant_bytes / quant_weights
    return (
        f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB): {quant_weights:,} ternary weights at "
        f"{bpw:.3f} bits per weight including scales (group size {source.job.quant.group_size})"
    )


def unpack(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a packed file as the HF minicpm-layout export holds it (fake-quantized)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a bitcpm packed file (format={meta.get('format')})")
    tensors = load_file(str(path))
    shapes, bases = json.loads(meta["shapes"]), json.loads(meta["scale_exponent_base"])
    out = {k: v for k, v in tensors.items() if not any(k.startswith(f"{n}.") for n in shapes)}
    for name, (shape, scale_shape) in shapes.items():
        count = shape[0] * shape[1]
        trits = (unpack_codes(tensors[f"{name}.trits"], meta["bits"], count) - 1).reshape(shape)
        if meta["scale_dtype"] == "bf16":
            scales = unpack_scales(tensors, name, bases[name], scale_shape)
        else:
            scales = tensors[f"{name}.scales"]
        groups = scale_shape[1]
        grouped = trits.to(scales.dtype).reshape(shape[0], groups, shape[1] // groups)
        out[name] = (grouped * scales.unsqueeze(-1)).reshape(shape)
    return out


def verify_packed(path: Path, source: Source) -> None:
    """Unpack the file and require every tensor to equal the fake-quantized export bit for bit."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        scale_dtype = f.metadata()["scale_dtype"]
    got, want = unpack(path), reference_tensors(source, scale_dtype)
    if set(got) != set(want):
        raise AssertionError(f"{path}: tensors differ from the export: {sorted(set(got) ^ set(want))[:3]}")
    for name, tensor in want.items():
        if got[name].dtype != tensor.dtype or not torch.equal(got[name], tensor):
            raise AssertionError(f"{path}: {name} does not unpack to the fake-quantized weight")
