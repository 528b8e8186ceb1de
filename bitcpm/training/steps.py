"""One optimizer step and one validation pass, both through megatron's forward-backward schedule.

The schedule (no pipelining, 1F1B or interleaved 1F1B) runs every micro-batch of the step; the loss lives on
the last pipeline stage, megatron's DDP reduces gradients (bucketed, overlapped) and finalize_model_grads
syncs tied embeddings and sequence-parallel norm gradients; megatron's optimizer unscales, measures the
gradient norm, clips and steps. The host reads two numbers per step (loss and gradient norm), never a
tensor per parameter or per micro-batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from bitcpm.quant.converter import refresh_quantized_weights
from bitcpm.training.faults import crash_point, nan_injected

# forward_step(data_iterator, model) -> (output, loss_func); megatron's forward_step_func contract.
ForwardStep = Callable[[Iterator, torch.nn.Module], tuple]


@functools.lru_cache(maxsize=8)
def causal_mask(seq_length: int, device: torch.device) -> torch.Tensor:
    """Megatron's mask convention: True marks positions a query may not attend to."""
    # Passed explicitly: megatron's default causal mask is allocated on "cuda" unconditionally.
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device), diagonal=1)[None, None]


def model_inputs(tokens: torch.Tensor) -> dict:
    """GPTModel keyword arguments for a [batch, seq + 1] token block (inputs are all but the last token)."""
    inputs = tokens[:, :-1]
    positions = torch.arange(inputs.shape[1], device=inputs.device).unsqueeze(0).expand_as(inputs)
    return {
        "input_ids": inputs,
        "position_ids": positions,
        "attention_mask": causal_mask(inputs.shape[1], inputs.device),
    }


def mean_loss(per_token: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Loss of one micro-batch (the schedule divides by the micro-batch count) and its detached copy."""
    loss = per_token.float().mean()
    # A copy: megatron divides the returned loss by the micro-batch count in place.
    return loss, {"loss": loss.detach().clone()}


def lm_forward_step(data_iterator: Iterator, model: torch.nn.Module) -> tuple:
    """Next-token cross-entropy (vocab-parallel inside megatron); non-last stages return hidden states."""
    tokens = next(data_iterator)
    return model(**model_inputs(tokens), labels=tokens[:, 1:]), mean_loss


def _run_schedule(engine, micro_batches: list[torch.Tensor], forward_step: ForwardStep, forward_only: bool):
    """All micro-batches through megatron's schedule; returns this rank's per-micro-batch loss dicts."""
    seq = micro_batches[0].shape[1] - 1
    iterators = [iter(micro_batches) for _ in engine.model]  # each virtual chunk consumes the whole list
    return engine.forward_backward(
        forward_step_func=forward_step,
        data_iterator=iterators if len(iterators) > 1 else iterators[0],
        model=engine.model,
        num_microbatches=len(micro_batches),
        seq_length=seq,
        micro_batch_size=micro_batches[0].shape[0],
        forward_only=forward_only,
    )


def reduce_loss(losses: list[dict]) -> torch.Tensor:
    """Mean over micro-batches, moved from the last pipeline stage to every stage, averaged over dp."""
    total = torch.stack([d["loss"] for d in losses]).mean() if losses else torch.zeros((), dtype=torch.float32)
    total = total.float().reshape(())
    if not losses:
        total = total.to(_device())
    pp_group = parallel_state.get_pipeline_model_parallel_group()
    if dist.get_world_size(pp_group) > 1:
        dist.all_reduce(total, group=pp_group)  # only the last stage holds a non-zero value
    dp_group = parallel_state.get_data_parallel_group()
    if dist.get_world_size(dp_group) > 1:
        dist.all_reduce(total, group=dp_group)
        total /= dist.get_world_size(dp_group)
    return total


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


@dataclass
class StepResult:
    """What one optimizer step reports."""

    loss: float
    grad_norm: float
    finite: bool


def train_step(
    engine,
    micro_batches: list[torch.Tensor],
    step: int | None = None,
    forward_step: ForwardStep = lm_forward_step,
) -> StepResult:
    """Forward/backward every micro-batch, reduce, clip, update (skipped if the loss or gradient is not finite)."""
    optimizer = engine.optimizer
    for chunk in engine.model:
        chunk.train()
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    losses = _run_schedule(engine, micro_batches, forward_step, forward_only=False)
    crash_point("mid_step", step)
    total = reduce_loss(losses)
    if step is not None and nan_injected(step):
        total = total * float("nan")
    if optimizer.prepare_grads():
        # fp16 overflow: megatron's loss scaler has backed off; the update is skipped, as megatron does.
        return StepResult(loss=float(total), grad_norm=float("nan"), finite=True)
    clip = optimizer.config.clip_grad
    norm = float(optimizer.clip_grad_norm(clip) if clip > 0 else optimizer.get_grad_norm())
    loss = float(total)
    finite = math.isfinite(loss) and math.isfinite(norm)
    if finite:
        optimizer.step_with_ready_grads()
        # Required, not only tidy: megatron writes updated weights through its param buffer (and the
        # distributed optimizer's all-gather), which does not bump the weights' version counters.
        for chunk in engine.model:
            refresh_quantized_weights(chunk)
    return StepResult(loss=loss, grad_norm=norm, finite=finite)


@torch.no_grad()
def evaluate(engine, batches: list[torch.Tensor], forward_step: ForwardStep = lm_forward_step) -> float:
    """Mean loss over the given micro-batches (this rank's share of the held-out set), averaged over dp."""
    for chunk in engine.model:
        chunk.eval()
    losses = _run_schedule(engine, batches, forward_step, forward_only=True)
    for chunk in engine.model:
        chunk.train()
    return float(reduce_loss(losses))
