"""One optimizer step and one validation pass over megatron-core's GPTModel."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from bitcpm.quant.converter import refresh_quantized_weights
from bitcpm.training.distributed import all_reduce_mean
from bitcpm.training.faults import crash_point, nan_injected


@functools.lru_cache(maxsize=8)
def causal_mask(seq_length: int, device: torch.device) -> torch.Tensor:
    """Megatron's mask convention: True marks positions a query may not attend to."""
    # Passed explicitly: megatron's default causal mask is allocated on "cuda" unconditionally.
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device), diagonal=1)[None, None]


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a [batch, seq + 1] token block (vocab-parallel CE inside)."""
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    positions = torch.arange(inputs.shape[1], device=inputs.device).unsqueeze(0).expand_as(inputs)
    mask = causal_mask(inputs.shape[1], inputs.device)
    per_token = model(input_ids=inputs, position_ids=positions, attention_mask=mask, labels=labels)
    return per_token.float().mean()


def grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """Global L2 norm of the gradients, counting tensor-parallel duplicates (norm weights) once."""
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    total = torch.zeros((), dtype=torch.float32)
    for p in model.parameters():
        if p.grad is None:
            continue
        if getattr(p, "tensor_model_parallel", False) or tp_rank == 0:
            total += p.grad.detach().float().pow(2).sum().cpu()
    tp_group = parallel_state.get_tensor_model_parallel_group()
    if dist.get_world_size(tp_group) > 1:
        dist.all_reduce(total, group=tp_group)
    return total.sqrt()


def clip_gradients(model: torch.nn.Module, norm: torch.Tensor, max_norm: float) -> None:
    """Scale gradients down to max_norm (0 disables)."""
    if max_norm <= 0:
        return
    coef = max_norm / (float(norm) + 1e-6)
    if coef < 1.0:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(coef)


def average_data_parallel_grads(model: torch.nn.Module) -> None:
    """All-reduce gradients over the data-parallel group (replicas saw different micro-batches)."""
    group = parallel_state.get_data_parallel_group()
    if dist.get_world_size(group) == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@dataclass
class StepResult:
    """What one optimizer step reports."""

    loss: float
    grad_norm: float
    finite: bool


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[torch.Tensor],
    clip_grad: float,
    step: int | None = None,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = lm_loss,
) -> StepResult:
    """Accumulate gradients over the micro-batches, average over dp, clip, update (skipped if not finite)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), dtype=torch.float32)
    for tokens in micro_batches:
        loss = loss_fn(model, tokens) / len(micro_batches)
        loss.backward()
        total += loss.detach().cpu()
    crash_point("mid_step", step)
    if step is not None and nan_injected(step):
        total = total * float("nan")
    average_data_parallel_grads(model)
    norm = grad_norm(model)
    all_reduce_mean(total, parallel_state.get_data_parallel_group())
    finite = math.isfinite(float(total)) and math.isfinite(float(norm))
    if finite:
        clip_gradients(model, norm, clip_grad)
        optimizer.step()
        refresh_quantized_weights(model)
    else:
        optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=float(total), grad_norm=float(norm), finite=finite)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    """Mean validation loss over the given micro-batches, averaged over data-parallel replicas."""
    model.eval()
    total = torch.zeros((), dtype=torch.float32)
    for tokens in batches:
        total += lm_loss(model, tokens).cpu()
    total /= max(1, len(batches))
    all_reduce_mean(total, parallel_state.get_data_parallel_group())
    return float(total)
