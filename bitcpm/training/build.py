"""The one builder of what a run trains with: model chunks, ternary converter, megatron DDP and optimizer, schedule.

Train, distill (student and frozen teacher) and bench all call `build_engine` / `build_frozen_model`, so the
layer spec (SDPA core attention on every backend), the init, the quantizer and megatron's engine are wired
once. Everything that trains comes from megatron-core: `DistributedDataParallel` (bucketed fp32 gradient
reduction overlapped with backward, distributed optimizer buffers), `get_megatron_optimizer` (AdamW with
fp32 main weights for bf16/fp16 models, clipping, fp16 loss scaling) and `get_forward_backward_func`
(no pipelining, 1F1B or interleaved 1F1B). MiniCPM's muP lr multipliers and the matrices-only weight decay
are megatron param-group overrides (ParamKey -> lr_mult / wd_mult), not a fork of its optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bitcpm.config.derived import grad_reduce_in_fp32
from bitcpm.config.model import ModelConfig
from bitcpm.config.optim import OptimConfig
from bitcpm.config.parallel import ParallelConfig, ParallelLayout, derive_layout
from bitcpm.config.quant import QuantConfig
from bitcpm.config.root import JobConfig
from bitcpm.models.minicpm.mup import HIDDEN_MATRICES, VECTORS, GroupRule, is_hidden_matrix, optimizer_rules

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Engine:
    """What a training process steps: DDP-wrapped model chunks, megatron's optimizer and schedule."""

    model: list  # megatron DistributedDataParallel, one per (virtual) pipeline chunk
    optimizer: object  # megatron MegatronOptimizer
    forward_backward: Callable
    layout: ParallelLayout
    config: object  # the TransformerConfig shared by every chunk
    quantized: list[str]

    def raw_chunks(self) -> list[torch.nn.Module]:
        """The GPTModel inside each DDP wrapper (state dicts without the 'module.' prefix)."""
        return [chunk.module for chunk in self.model]

    def sync_params(self) -> None:
        """Finish the distributed optimizer's parameter all-gather now (with overlap it waits for the next forward)."""
        if self.model[0].ddp_config.overlap_param_gather:
            for chunk in self.model:
                chunk.start_param_sync(force_sync=True)


def _transformer_config(model_cfg: ModelConfig, p: ParallelConfig, dtype: str, device: str):
    from bitcpm.backends import get_backend
    from bitcpm.models.minicpm.model import transformer_config

    config = transformer_config(
        model_cfg,
        tp=p.tp,
        dtype=dtype,
        sequence_parallel=p.sequence_parallel,
        recompute=p.recompute,
        pp=p.pp,
        virtual_pp=p.virtual_pp,
    )
    for key, value in get_backend(device).transformer_config_overrides().items():
        setattr(config, key, value)
    return config


def build_chunks(
    model_cfg: ModelConfig,
    quant: QuantConfig,
    p: ParallelConfig,
    dtype: str,
    seq_length: int,
    seed: int,
    device: str = "cpu",
) -> tuple[list[torch.nn.Module], object, list[str]]:
    """This rank's model chunks (one per virtual stage), layout-independent init, ternary converter applied."""
    from megatron.core import parallel_state

    from bitcpm.models import build_model
    from bitcpm.models.minicpm.init import init_by_name
    from bitcpm.quant.converter import convert_to_ternary

    config = _transformer_config(model_cfg, p, dtype, device)
    vpp = p.virtual_pp if p.pp > 1 and p.virtual_pp > 1 else None
    chunks, quantized = [], []
    for vp_stage in range(vpp or 1):
        model = build_model(model_cfg, seq_length=seq_length, config=config, vp_stage=vp_stage if vpp else None)
        init_by_name(model, model_cfg, seed, p.tp, parallel_state.get_tensor_model_parallel_rank())
        quantized += convert_to_ternary(model, quant)  # every stage holds layers (validated)
        chunks.append(model)
    return chunks, config, quantized


def param_group_overrides(model_cfg: ModelConfig, eps: float) -> dict:
    """mup.optimizer_rules as megatron ParamKey overrides: hidden matrices lr/m, decay x m, eps/m (all 1 under sp);
    no weight decay on vectors (norms)."""
    from megatron.core.optimizer import ParamKey
    from megatron.core.optimizer.optimizer_config import ParamPredicate, ParamWithNamePredicate

    rules = optimizer_rules(model_cfg)
    hidden_rule, vector_rule = rules[HIDDEN_MATRICES], rules[VECTORS]
    hidden = ParamWithNamePredicate(name="mup_hidden_matrix", fn=lambda param, name: is_hidden_matrix(name, param))
    vector = ParamPredicate(name="vector", fn=lambda param: param.dim() < 2)
    overrides = {ParamKey(predicate=vector): {"wd_mult": vector_rule.wd_mult}}
    # At m = 1 (and under sp) the hidden rule is the default: a group of its own would share megatron's group key
    # (wd_mult, lr_mult) with the default group, and megatron's checkpoint load, which matches groups by that key,
    # then fails ("parameter group that doesn't match the size"). The same settings in one group train the same.
    if hidden_rule != GroupRule():  # GroupRule() is the default group: every multiplier 1
        # torch's Adam and megatron's fused Adam read eps per param group.
        overrides[ParamKey(with_name_predicate=hidden)] = {
            "lr_mult": hidden_rule.lr_mult,
            "wd_mult": hidden_rule.wd_mult,
            "eps": eps * hidden_rule.eps_mult,
        }
    return overrides


def optimizer_config(
    optim: OptimConfig, dtype: str, layout: ParallelLayout, base_lr: float, overlap_param_gather: bool
):
    """megatron OptimizerConfig: AdamW (decoupled decay), fp32 main weights for half precision, fp16 loss scaling."""
    from megatron.core.optimizer import OptimizerConfig

    return OptimizerConfig(
        optimizer="adam",
        lr=base_lr,
        min_lr=0.0,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.beta1,
        adam_beta2=optim.beta2,
        adam_eps=optim.eps,
        clip_grad=optim.clip_grad,
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        params_dtype=TORCH_DTYPES[dtype],
        use_distributed_optimizer=layout.distributed_optimizer,
        overlap_param_gather=overlap_param_gather,
        decoupled_weight_decay=True,
    )


def wrap_ddp(
    chunks: list[torch.nn.Module], config, p: ParallelConfig, layout: ParallelLayout, grad_in_fp32: bool
) -> list:
    """megatron DDP per chunk: fp32 gradient buffers, bucketed reduction (overlapped with backward when asked)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    ddp_config = DistributedDataParallelConfig(
        # The planner's rule (config.derived): fp32 main_grad for bf16/fp16 models; fp32 models are fp32 anyway.
        grad_reduce_in_fp32=grad_in_fp32,
        overlap_grad_reduce=p.overlap_grad_reduce,
        use_distributed_optimizer=layout.distributed_optimizer,
        overlap_param_gather=p.overlap_param_gather and layout.distributed_optimizer,
        align_param_gather=p.overlap_param_gather and layout.distributed_optimizer and p.pp > 1,
        bucket_size=max(1, int(p.bucket_size_mb * 2**20 / 4)),  # elements of the fp32 gradient buffer
    )
    return [
        # Only the first chunk is bucketed (megatron's rule: later chunks' grads are ready first anyway).
        DistributedDataParallel(config=config, ddp_config=ddp_config, module=chunk, disable_bucketing=i > 0)
        for i, chunk in enumerate(chunks)
    ]


def _wire_schedule(config, model: list, optimizer, p: ParallelConfig, layout: ParallelLayout) -> None:
    """The hooks megatron's schedules call: no_sync for accumulation, grad/param sync, finalize, loss scale."""
    from megatron.core.distributed import finalize_model_grads

    no_sync = [chunk.no_sync for chunk in model]
    config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    if p.overlap_grad_reduce and p.pp > 1:
        grad_sync = [chunk.start_grad_sync for chunk in model]
        config.grad_sync_func = grad_sync[0] if len(grad_sync) == 1 else grad_sync
    if p.overlap_param_gather and layout.distributed_optimizer and p.pp > 1:
        param_sync = [chunk.start_param_sync for chunk in model]
        config.param_sync_func = param_sync[0] if len(param_sync) == 1 else param_sync
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss


def build_engine(job: JobConfig, world_size: int, base_lr: float) -> Engine:
    """Everything `job` trains with on this rank (megatron parallel state must be initialised)."""
    from megatron.core.optimizer import get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    p = job.parallel
    layout = derive_layout(p, world_size)
    chunks, config, quantized = build_chunks(
        job.model, job.quant, p, job.hardware.dtype, job.train.seq_length, job.train.seed, job.hardware.device
    )
    model = wrap_ddp(chunks, config, p, layout, grad_reduce_in_fp32(job))
    opt_config = optimizer_config(
        job.optim, job.hardware.dtype, layout, base_lr, p.overlap_param_gather and layout.distributed_optimizer
    )
    overrides = param_group_overrides(job.model, job.optim.eps)
    optimizer = get_megatron_optimizer(opt_config, model, config_overrides=overrides)
    _wire_schedule(config, model, optimizer, p, layout)
    set_lr(optimizer, base_lr, 1.0, job.optim.weight_decay)
    return Engine(model, optimizer, get_forward_backward_func(), layout, config, quantized)


def build_frozen_model(
    model_cfg: ModelConfig,
    quant: QuantConfig,
    p: ParallelConfig,
    dtype: str,
    seq_length: int,
    seed: int,
    device: str = "cpu",
) -> list[torch.nn.Module]:
    """A model for inference only (the distillation teacher): the same chunks, no DDP, no optimizer."""
    chunks, _config, _ = build_chunks(model_cfg, quant, p, dtype, seq_length, seed, device)
    for chunk in chunks:
        chunk.requires_grad_(False).eval()
    return chunks


def set_lr(optimizer, base_lr: float, multiplier: float, weight_decay: float) -> float:
    """The schedule on megatron's param groups: lr = base x schedule x lr_mult, decay = wd x wd_mult."""
    lr = base_lr * multiplier
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
        group["weight_decay"] = weight_decay * group.get("wd_mult", 1.0)
    return lr
