"""What megatron-core's engine actually allocates for weights, gradients and optimizer state on this rank.

Counted from the objects megatron builds, not from a formula: DDP's parameter and gradient buffers (or the
parameters themselves where there is no parameter buffer), the main parameters its optimizer steps (those that
do not share storage with the model's weights) and the optimizer's per-parameter state tensors.
"""

from __future__ import annotations

import torch


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def allocated_bytes(engine) -> dict[str, int]:
    """weights, grads, main_weights, optimizer (Adam moments) in bytes, after one optimizer step created the state."""
    weights = grads = 0
    model_storage: set[int] = set()
    for chunk in engine.model:
        buffers = list(chunk.buffers) + list(chunk.expert_parallel_buffers)
        for buf in buffers:
            grads += _bytes(buf.grad_data)
            if buf.param_data is not None:
                weights += _bytes(buf.param_data)
                model_storage.add(buf.param_data.untyped_storage().data_ptr())
        params = list(chunk.module.parameters())
        model_storage.update(p.untyped_storage().data_ptr() for p in params)
        if all(buf.param_data is None for buf in buffers):
            weights += sum(_bytes(p) for p in params)
    main = state = 0
    for inner in getattr(engine.optimizer, "chained_optimizers", [engine.optimizer]):
        torch_optimizer = inner.optimizer
        for group in torch_optimizer.param_groups:
            for p in group["params"]:
                if p.untyped_storage().data_ptr() not in model_storage:
                    main += _bytes(p)
                for value in torch_optimizer.state.get(p, {}).values():
                    if isinstance(value, torch.Tensor) and value.dim() > 0:  # not Adam's scalar step count
                        state += _bytes(value)
    return {"weights": weights, "grads": grads, "main_weights": main, "optimizer": state}


def build_and_count(job, world_size: int) -> dict[str, int]:
    """Build the job's engine with bitcpm's builder, take one optimizer step (Adam's state is lazy), count."""
    from bitcpm.training.build import build_engine

    engine = build_engine(job, world_size, 1e-3)
    engine.optimizer.zero_grad()
    engine.optimizer.step()
    return allocated_bytes(engine)
