"""What every export writes: a model's fake-quantized weights, their trits and scales, and its reference forward.

All on a tp=1 model (bitcpm.export.source), where every quantization group lies in one tensor, so the
trits and scales here are the ones the training forward used (per-channel scales at tp > 1 are all-reduced to
the same tp=1 value). W_q is computed by the training quantizer's own function, so `trits * scales` equals
the trained W_q bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bitcpm.quant.ternary import quantize_local


@dataclass(frozen=True)
class TernaryTensor:
    """trits in {-1, 0, 1} (int8, [rows, cols]) and fp32 scales ([rows, cols // group]) of one weight."""

    trits: torch.Tensor
    scales: torch.Tensor
    group_size: int

    def dequantize(self) -> torch.Tensor:
        """trits x scale in fp32, computed as the quantizer computes W_q."""
        rows, cols = self.trits.shape
        groups = self.scales.shape[1]
        grouped = self.trits.float().reshape(rows, groups, cols // groups)
        return (grouped * self.scales.unsqueeze(-1)).reshape(rows, cols)


def quantized_weights(model: torch.nn.Module) -> dict[str, tuple[int, float]]:
    """megatron weight name -> (group_size, eps) of every ternary linear of the model."""
    from bitcpm.quant.converter import ternary_modules

    found = {id(m): m for m in ternary_modules(model)}
    return {f"{name}.weight": (m.quant_group_size, m.quant_eps) for name, m in model.named_modules() if id(m) in found}


def ternary_parts(weight: torch.Tensor, group_size: int, eps: float) -> TernaryTensor:
    """trits and scales of a full weight, with the quantizer's arithmetic (fp32 absmean, round, clamp)."""
    rows, cols = weight.shape
    g = cols if group_size == -1 else group_size
    grouped = weight.detach().float().reshape(rows, cols // g, g)
    scales = grouped.abs().mean(dim=-1, keepdim=True).clamp_min(eps)
    trits = torch.clamp(torch.round(grouped / scales), -1.0, 1.0)
    return TernaryTensor(trits.reshape(rows, cols).to(torch.int8), scales.squeeze(-1), group_size)


def ternary_state(model: torch.nn.Module) -> dict[str, TernaryTensor]:
    """TernaryTensor of every quantized weight of a tp=1 model."""
    params = dict(model.named_parameters())
    out = {}
    for name, (group, eps) in quantized_weights(model).items():
        parts = ternary_parts(params[name], group, eps)
        # The parts must give exactly the W_q the training forward multiplies with.
        if not torch.equal(parts.dequantize(), quantize_local(params[name].detach().float(), group, eps)):
            raise AssertionError(f"{name}: trits x scales differ from the quantizer's W_q")
        out[name] = parts
    return out


def fake_quantized_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tp=1 state dict with every quantized weight replaced by W_q (fp32), megatron's extra state dropped."""
    state = {k: v.detach().float() for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    for name, parts in ternary_state(model).items():
        state[name] = parts.dequantize()
    return state


def split_to_hf(name: str, parts: TernaryTensor, cfg) -> dict[str, TernaryTensor]:
    """HF (minicpm-layout) names of a megatron weight's trits/scales: fused rows split as hf_layout does."""
    from bitcpm.models.minicpm.hf_layout import hf_names, split_qkv

    targets = hf_names(name)
    if len(targets) == 1:
        return {targets[0]: parts}
    if name.endswith("linear_qkv.weight"):
        trits, scales = split_qkv(parts.trits, cfg), split_qkv(parts.scales, cfg)
    else:
        trits, scales = parts.trits.chunk(2, dim=0), parts.scales.chunk(2, dim=0)
    return {
        t: TernaryTensor(tr.contiguous(), sc.contiguous(), parts.group_size)
        for t, tr, sc in zip(targets, trits, scales, strict=True)
    }


def megatron_logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """bitcpm's forward of [batch, seq] tokens: fp32 logits [batch, seq, vocab] (this rank's vocab shard at tp > 1)."""
    from bitcpm.training.steps import causal_mask

    b, s = tokens.shape
    with torch.no_grad():
        logits = model(
            input_ids=tokens,
            position_ids=torch.arange(s)[None].expand(b, -1),
            attention_mask=causal_mask(s, tokens.device),
        )
    return logits.float()


def greedy(next_logits, prompt: torch.Tensor, steps: int) -> list[int]:
    """Greedy continuation of a [1, seq] prompt by a logits function (full recompute, no cache)."""
    tokens = prompt.clone()
    for _ in range(steps):
        nxt = next_logits(tokens)[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, nxt], dim=1)
    return tokens[0, prompt.shape[1] :].tolist()
