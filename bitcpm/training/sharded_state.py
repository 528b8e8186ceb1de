"""Model and optimizer state as megatron dist_checkpointing sharded state, readable at any layout.

Every tensor is stored under megatron's global key (the model's `sharded_state_dict()` names, the
optimizer's `optimizer.state.<moment>.<param key>`), so a checkpoint written at one (tp, pp, dp,
distributed optimizer) layout loads at another: dist_checkpointing reads each rank's slice. The
optimizer's non-tensor state (param groups: lr, weight decay, muP multipliers) is NOT taken from the
checkpoint: it depends on the layout (a pipeline stage holds some groups only) and is rebuilt from the
config anyway; only Adam's step count travels, as one number.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace, nested_values
from megatron.core.dist_checkpointing.mapping import LocalNonpersistentObject, ShardedBase, ShardedObject

# fully_reshardable keeps the distributed optimizer's state in model space (one tensor per parameter and
# moment), the same keys a non-distributed megatron optimizer writes: the two read each other's checkpoints.
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True}
_MAIN_PARAM_ALIASES = ("optimizer.state.param.", "optimizer.state.fp32_param.")


def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The megatron module inside DDP / Float16Module wrappers."""
    from megatron.core.utils import unwrap_model

    return unwrap_model(chunk)


def prepare(chunks: list[torch.nn.Module]) -> None:
    """Models on the CPU need the dist_checkpointing shim (megatron's writer assumes CUDA)."""
    from bitcpm.backends import cpu_checkpoint_shim

    first = next((p for c in chunks for p in c.parameters()), None)
    if first is not None and first.device.type == "cpu":
        cpu_checkpoint_shim.apply()


def layout() -> dict[str, int]:
    """This process's parallel layout (what the RNG state and the report depend on)."""
    ps = parallel_state
    return {
        "tp": ps.get_tensor_model_parallel_world_size(),
        "pp": ps.get_pipeline_model_parallel_world_size(),
        "dp": ps.get_data_parallel_world_size(),
        "world": torch.distributed.get_world_size(),
    }


def model_state(chunks: list[torch.nn.Module]) -> dict[str, Any]:
    """Sharded state of every model chunk ("model", or "model<i>" with virtual pipeline stages)."""
    if len(chunks) == 1:
        return {"model": unwrap(chunks[0]).sharded_state_dict()}
    return {f"model{i}": unwrap(c).sharded_state_dict() for i, c in enumerate(chunks)}


def _sharded_leaves(tree: Any) -> list[ShardedBase]:
    return [v for v in nested_values(tree) if isinstance(v, ShardedBase)]


def adam_step(native: Any) -> int | None:
    """Adam's step count, wherever this megatron optimizer keeps it (state or param groups)."""
    if isinstance(native, dict):
        if "common_step" in native:
            return int(native["common_step"])
        for group in native.get("param_groups", []) if isinstance(native.get("param_groups"), list) else []:
            if isinstance(group, dict) and group.get("step") is not None:
                return int(group["step"])
        for value in native.values():
            found = adam_step(value)
            if found is not None:
                return found
    return None


def _set_adam_step(native: Any, step: int) -> None:
    if not isinstance(native, dict):
        return
    if isinstance(native.get("state"), dict):
        native["state"]["common_step"] = torch.tensor(float(step))
    for group in native.get("param_groups", []) if isinstance(native.get("param_groups"), list) else []:
        if isinstance(group, dict) and "step" in group:
            group["step"] = step
    for key, value in native.items():
        if key != "state":
            _set_adam_step(value, step)


class TorchOptimizer:
    """A plain torch optimizer (AdamW) seen through megatron's optimizer checkpoint interface.

    Its per-parameter moments get the keys megatron's own non-distributed optimizer uses
    (`optimizer.state.<moment>.<param key>`), so the two read each other's checkpoints.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.init_state_fn = None

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def sharded_state_dict(self, model_sd: dict[str, Any], is_loading: bool = False, metadata=None) -> dict:
        """megatron's optimizer format: moments as ShardedTensors, the common step apart."""
        from megatron.core.dist_checkpointing.optimizer import (
            get_param_id_to_sharded_param_map,
            optim_state_to_sharding_state,
        )

        if is_loading:
            for p in self._params():
                entry = self.optimizer.state[p]
                if "exp_avg" not in entry:
                    entry.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                entry.setdefault("step", torch.zeros((), dtype=torch.float32))
        state = self.optimizer.state_dict()
        steps = {float(e["step"]) for e in state["state"].values() if "step" in e}
        optim_state_to_sharding_state(
            state, get_param_id_to_sharded_param_map(model_sd, self._params()), exclude_keys=("step",)
        )
        if steps:
            state["state"]["common_step"] = max(steps)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load moments and step (each parameter its own step tensor)."""
        step = state["state"].pop("common_step", None)
        for entry in state["state"].values():
            if step is not None:
                entry["step"] = torch.tensor(float(step))
        self.optimizer.load_state_dict(state)


def as_megatron(optimizer: Any) -> Any:
    """megatron optimizers as they are; torch optimizers behind TorchOptimizer."""
    return TorchOptimizer(optimizer) if isinstance(optimizer, torch.optim.Optimizer) else optimizer


def optimizer_save_state(optimizer, model_sd: dict[str, Any]) -> tuple[dict[str, ShardedBase], int | None]:
    """The optimizer's sharded tensors (keyed by position) and Adam's step count."""
    optimizer = as_megatron(optimizer)
    native = optimizer.sharded_state_dict(model_sd, is_loading=False, metadata=OPTIMIZER_METADATA)
    return {str(i): v for i, v in enumerate(_sharded_leaves(native))}, adam_step(native)


def rng_object() -> ShardedObject:
    """This rank's RNG states (torch, CUDA where present, megatron's model-parallel tracker)."""
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    return ShardedObject("bitcpm.rng_state", state, (world,), (rank,), replica_id=0)


def restore_rng(state: dict[str, Any]) -> None:
    """Put this rank's saved RNG states back."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _alias(key: str, saved: set[str]) -> str:
    """A saved key holding the same values as a requested one.

    Main (fp32) params are stored as `optimizer.state.param.K` by the distributed optimizer, as
    `optimizer.state.fp32_param.K` by the non-distributed one for 16-bit models, and not at all for
    fp32 models without the distributed optimizer (there the model weight K is the main param).
    """
    if key in saved:
        return key
    for prefix in _MAIN_PARAM_ALIASES:
        if key.startswith(prefix):
            bare = key[len(prefix) :]
            for candidate in [p + bare for p in _MAIN_PARAM_ALIASES] + [bare]:
                if candidate in saved:
                    return candidate
    raise ValueError(f"checkpoint has no tensor {key!r} (nor an equivalent one): saved by another model?")


def _seed_fresh_state(optimizer) -> None:
    """Give a never-stepped optimizer zero moments and step 0 (the distributed optimizer's state_dict
    needs them to describe itself; the checkpoint's values replace them)."""
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is None or len(inner.state) > 0 or getattr(opt, "init_state_fn", None) is None:
            continue
        opt.init_state_fn(inner, opt.config)
        for group in inner.param_groups:
            for p in group["params"]:
                inner.state[p].setdefault("step", torch.zeros((), dtype=torch.float32))


class OptimizerLoad:
    """Request the optimizer's tensors from a checkpoint, then hand them to the optimizer."""

    def __init__(self, optimizer, model_sd: dict[str, Any], saved_keys: set[str]) -> None:
        optimizer = as_megatron(optimizer)
        self.optimizer = optimizer
        _seed_fresh_state(optimizer)
        self.native = optimizer.sharded_state_dict(model_sd, is_loading=True, metadata=OPTIMIZER_METADATA)
        model_keys = {leaf.key for leaf in _sharded_leaves(model_sd)}
        self.request: dict[str, ShardedBase] = {}
        # Main params of a checkpoint that stored none are its model weights. The model's own request reads
        # those keys already and torch_dist cannot read one key twice in a load: they come in a second one.
        self.from_model: dict[str, ShardedBase] = {}
        self.count = 0
        for i, leaf in enumerate(_sharded_leaves(self.native)):
            key = _alias(leaf.key, saved_keys)
            target = self.from_model if key in model_keys else self.request
            target[str(i)] = leaf if key == leaf.key else dataclasses.replace(leaf, key=key)
            self.count += 1

    def apply(self, loaded: dict[str, Any], step: int | None) -> None:
        """Load the tensors (both requests' results merged) and Adam's step into the optimizer.

        The param groups stay the current ones (built from the config at this layout).
        """
        values = iter(loaded[str(i)] for i in range(self.count))

        def fill(x: Any) -> Any:
            if isinstance(x, ShardedBase):
                return next(values)
            return x.unwrap() if isinstance(x, LocalNonpersistentObject) else x

        dict_list_map_inplace(fill, self.native)
        if step is not None:
            _set_adam_step(self.native, step)
        chained = getattr(self.optimizer, "chained_optimizers", [self.optimizer])
        parts = [self.native] if len(chained) == 1 else [self.native[i] for i in range(len(chained))]
        for opt, native in zip(chained, parts, strict=True):
            _load_one(opt, native)


def _load_one(opt, native: dict[str, Any]) -> None:
    """Load one megatron optimizer's state, around two megatron-core 0.16 traps with torch's Adam.

    DistributedOptimizer.load_state_dict gives every parameter the SAME 'step' tensor, which torch's Adam
    increments in place once per parameter: the bias correction would run ahead. And
    load_parameter_state_from_fully_reshardable copies into every entry of the per-parameter state,
    'step' included, from tensors that never carry one (KeyError; TE/apex FusedAdam keeps no 'step' there).
    So the parameter state is loaded with the steps set aside, and each parameter gets its own step.
    """
    param_state = None
    if native.get("param_state_sharding_type") == "fully_reshardable":
        param_state = native.pop("param_state")
        native.pop("param_state_sharding_type")
    opt.load_state_dict(native)
    state = getattr(getattr(opt, "optimizer", None), "state", {})
    steps = {p: entry.pop("step") for p, entry in state.items() if "step" in entry}
    try:
        if param_state is not None:
            opt.load_parameter_state_from_fully_reshardable(param_state)
    finally:
        for p, value in steps.items():
            state[p]["step"] = value.detach().clone() if isinstance(value, torch.Tensor) else value


def saved_tensor_keys(ckpt_dir: Path) -> set[str]:
    """Global keys of every tensor stored in a checkpoint."""
    return set(dist_checkpointing.load_tensors_metadata(str(ckpt_dir)).keys())
