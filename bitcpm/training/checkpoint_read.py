"""Reading a checkpoint into a model (and optimizer) built at this process's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from megatron.core import dist_checkpointing

from bitcpm.training import sharded_state


def checkpoint_info(ckpt_dir: Path) -> dict[str, Any]:
    """The checkpoint's own record: format, step, layout it was saved at, Adam step, extra_state."""
    common = dist_checkpointing.load_common_state_dict(str(ckpt_dir))
    if "bitcpm" not in common:
        raise ValueError(f"checkpoint {ckpt_dir} was not written by bitcpm (no 'bitcpm' record in its common state)")
    return common["bitcpm"]


def read_into(
    ckpt_dir: Path, model_chunks: list[torch.nn.Module], optimizer: Any | None, with_rng: bool
) -> dict[str, Any]:
    """Every rank: load this rank's slices of the model (and optimizer); returns the saved extra_state."""
    sharded_state.prepare(model_chunks)
    info = checkpoint_info(ckpt_dir)
    request = sharded_state.model_state(model_chunks)
    model_keys = list(request)
    opt_load = None
    if optimizer is not None:
        saved = sharded_state.saved_tensor_keys(ckpt_dir)
        if not any(k.startswith("optimizer.") for k in saved):
            raise ValueError(f"checkpoint {ckpt_dir} holds no optimizer state (a weights-only export?)")
        opt_load = sharded_state.OptimizerLoad(optimizer, dict(request), saved)
        request["optimizer"] = opt_load.request
    # RNG streams belong to ranks; at another layout there is no rank to give them to.
    same_layout = info["layout"] == sharded_state.layout()
    if with_rng and same_layout:
        request["rng"] = sharded_state.rng_object()
    loaded = dist_checkpointing.load(request, str(ckpt_dir))
    for key, chunk in zip(model_keys, model_chunks, strict=True):
        sharded_state.unwrap(chunk).load_state_dict(loaded[key])
    if opt_load is not None:
        tensors = dict(loaded["optimizer"])
        if opt_load.from_model:
            tensors |= dist_checkpointing.load(dict(opt_load.from_model), str(ckpt_dir))
        opt_load.apply(tensors, info.get("adam_step"))
    if "rng" in request:
        sharded_state.restore_rng(loaded["rng"])
    return dict(info["extra_state"])
