"""AdamW with MiniCPM's muP per-tensor learning rates and decoupled weight decay on matrices."""

from __future__ import annotations

import torch

from bitcpm.config.model import ModelConfig
from bitcpm.config.optim import OptimConfig
from bitcpm.models.minicpm.mup import lr_multiplier


def param_groups(model: torch.nn.Module, model_cfg: ModelConfig, optim: OptimConfig) -> list[dict]:
    """Group parameters by (lr multiplier, weight decay); each group records its lr_mult."""
    groups: dict[tuple[float, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        mult = lr_multiplier(name, param, model_cfg)
        decay = optim.weight_decay if param.dim() >= 2 else 0.0
        group = groups.setdefault((mult, decay), {"params": [], "names": [], "lr_mult": mult, "weight_decay": decay})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(
    model: torch.nn.Module, model_cfg: ModelConfig, optim: OptimConfig, base_lr: float
) -> torch.optim.AdamW:
    """torch AdamW (megatron's optimizer needs CUDA; torch's runs on every backend)."""
    groups = param_groups(model, model_cfg, optim)
    for g in groups:
        g["lr"] = base_lr * g["lr_mult"]
    return torch.optim.AdamW(groups, lr=base_lr, betas=(optim.beta1, optim.beta2), eps=optim.eps)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, multiplier: float) -> float:
    """Apply the schedule: every group gets base_lr x schedule x its muP multiplier; returns the base value."""
    lr = base_lr * multiplier
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_mult"]
    return lr
