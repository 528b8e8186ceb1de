"""MiniCPM's muP ("Tensor Program") scalings, applied to a built megatron-core GPTModel, and its optimizer rules.

The released modeling code multiplies the embedding output by scale_emb, every residual branch by
scale_depth / sqrt(num_layers), and divides the final hidden state by m = hidden_size /
dim_model_base before the LM head. They are forward hooks so the megatron layer spec stays stock and
a quantizer can swap the linear classes without knowing about muP.

`model.parameterization=sp` (standard parameterization) is muP without its width rules: hidden init std
and lr are not divided by m and the logits not by m; scale_emb and the residual scale stay. At width =
dim_model_base (m = 1) the two are the same network, so a wind tunnel comparing them shows only what the
width rules do (the baseline of EleutherAI's nanoGPT-mup and microsoft/mup's examples; README, wind tunnel).

Optimizer rules for hidden matrices under muP (`optimizer_rules`): lr / m (MiniCPM Table 7), weight decay x m
(microsoft/mup's MuAdamW: AdamW's decoupled decay is multiplied by the group's lr, so lr x wd, the per-step
shrink, stays what it is at the base width), Adam eps / m (Everett et al. 2024, CompleteP: gradients of
hidden weights shrink with width, and a fixed eps would start to dominate their second moment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the rules are read by the torch-free plan; only the hooks touch tensors
    import torch

from bitcpm.config.model import ModelConfig


def is_mup(cfg: ModelConfig) -> bool:
    """True when MiniCPM's muP rules apply (model.parameterization=mup)."""
    return cfg.parameterization == "mup"


def width_mult(cfg: ModelConfig) -> float:
    """Width multiplier the rules use: m = hidden_size / dim_model_base under muP, 1 under sp."""
    return cfg.width_mult if is_mup(cfg) else 1.0


def residual_scale(cfg: ModelConfig) -> float:
    """Multiplier of each attention / MLP branch before it joins the residual stream (both parameterizations)."""
    return cfg.scale_depth / math.sqrt(cfg.num_layers)


def embedding_scale(cfg: ModelConfig) -> float:
    """Multiplier of the embedding output: scale_emb (both parameterizations)."""
    return cfg.scale_emb


@dataclass(frozen=True)
class GroupRule:
    """How one kind of parameter's optimizer settings follow width: multipliers of the base lr, decay, eps."""

    lr_mult: float = 1.0
    wd_mult: float = 1.0
    eps_mult: float = 1.0


HIDDEN_MATRICES = "hidden matrices"
EMBEDDING_AND_HEAD = "embedding and head"
VECTORS = "norms"


def optimizer_rules(cfg: ModelConfig) -> dict[str, GroupRule]:
    """Per kind of parameter: hidden 2-D matrices (lr/m, decay x m, eps/m), embedding and head, norms (no decay)."""
    m = width_mult(cfg)
    return {
        HIDDEN_MATRICES: GroupRule(lr_mult=1.0 / m, wd_mult=m, eps_mult=1.0 / m),
        EMBEDDING_AND_HEAD: GroupRule(),
        VECTORS: GroupRule(wd_mult=0.0),
    }


def effective_settings(cfg: ModelConfig, lr: float, weight_decay: float, eps: float) -> dict[str, dict[str, float]]:
    """Per kind of parameter at the peak lr: lr, the decay's per-step shrink lr x wd (AdamW), eps."""
    return {
        kind: {
            "lr": lr * r.lr_mult,
            "weight_decay": weight_decay * r.wd_mult,
            "decay_per_step": lr * r.lr_mult * weight_decay * r.wd_mult,
            "eps": eps * r.eps_mult,
        }
        for kind, r in optimizer_rules(cfg).items()
    }


def hidden_init_std(cfg: ModelConfig) -> float:
    """Init std of 2-D matrices inside decoder layers: init_std / sqrt(m) (MiniCPM paper Table 7)."""
    return cfg.init_std / math.sqrt(width_mult(cfg))


def output_init_std(cfg: ModelConfig) -> float:
    """Init std of an untied LM head: init_std, like the embedding it replaces (the coord check's choice).

    Under muP the head is read through the 1/m logit multiplier and trained at the base lr, so it is an
    "output weight" in the Tensor Programs sense: constant init and lr, the multiplier does the width
    scaling. init_std / sqrt(m) on top would shrink the initial logits by another sqrt(m) (README, wind tunnel).
    """
    return cfg.init_std


def _scale_output(factor: float):
    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
        # megatron linears return (output, bias); the bias is None here (add_bias_linear=False).
        if isinstance(output, tuple):
            out, bias = output
            return out * factor, None if bias is None else bias * factor
        return output * factor

    return hook


def _scale_first_input(factor: float):
    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return (args[0] * factor, *args[1:]), kwargs

    return hook


def apply_mup(model: torch.nn.Module, cfg: ModelConfig) -> None:
    """Register the forward scalings on a megatron GPTModel or one pipeline stage of it (sp: no 1/m on logits)."""
    if getattr(model, "pre_process", True) and embedding_scale(cfg) != 1.0:
        model.embedding.register_forward_hook(_scale_output(embedding_scale(cfg)))
    if residual_scale(cfg) != 1.0:
        branch = _scale_output(residual_scale(cfg))
        for layer in model.decoder.layers:
            layer.self_attention.linear_proj.register_forward_hook(branch)
            layer.mlp.linear_fc2.register_forward_hook(branch)
    if getattr(model, "post_process", True) and width_mult(cfg) != 1.0:
        model.output_layer.register_forward_pre_hook(_scale_first_input(1.0 / width_mult(cfg)), with_kwargs=True)


def is_hidden_matrix(name: str, param: torch.nn.Parameter) -> bool:
    """2-D weights inside decoder layers: they get init_std/sqrt(m) and lr/m (MiniCPM paper Table 7)."""
    return param.dim() == 2 and ".layers." in f".{name}"
