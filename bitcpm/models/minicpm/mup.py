"""MiniCPM's muP ("Tensor Program") scalings, applied to a built megatron-core GPTModel.

The released modeling code multiplies the embedding output by scale_emb, every residual branch by
scale_depth / sqrt(num_layers), and divides the final hidden state by m = hidden_size /
dim_model_base before the LM head. They are forward hooks so the megatron layer spec stays stock and
a quantizer can swap the linear classes without knowing about muP.

`model.parameterization=sp` (standard parameterization) switches every one of these multipliers off:
no width factor in init, per-tensor lr or logits, embedding and residual branches unscaled. It is the
same network trained the common way, so a wind tunnel can show what muP's rules buy.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bitcpm.config.model import ModelConfig


def is_mup(cfg: ModelConfig) -> bool:
    """True when MiniCPM's muP rules apply (model.parameterization=mup)."""
    return cfg.parameterization == "mup"


def width_mult(cfg: ModelConfig) -> float:
    """Width multiplier the rules use: m = hidden_size / dim_model_base under muP, 1 under sp."""
    return cfg.width_mult if is_mup(cfg) else 1.0


def residual_scale(cfg: ModelConfig) -> float:
    """Multiplier of each attention / MLP branch before it joins the residual stream."""
    return cfg.scale_depth / math.sqrt(cfg.num_layers) if is_mup(cfg) else 1.0


def embedding_scale(cfg: ModelConfig) -> float:
    """Multiplier of the embedding output (scale_emb under muP)."""
    return cfg.scale_emb if is_mup(cfg) else 1.0


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
    """Register the three forward scalings on a megatron GPTModel or one pipeline stage of it (none under sp)."""
    if not is_mup(cfg):
        return
    if getattr(model, "pre_process", True):
        model.embedding.register_forward_hook(_scale_output(embedding_scale(cfg)))
    branch = _scale_output(residual_scale(cfg))
    for layer in model.decoder.layers:
        layer.self_attention.linear_proj.register_forward_hook(branch)
        layer.mlp.linear_fc2.register_forward_hook(branch)
    if getattr(model, "post_process", True):
        model.output_layer.register_forward_pre_hook(_scale_first_input(1.0 / width_mult(cfg)), with_kwargs=True)


def is_hidden_matrix(name: str, param: torch.nn.Parameter) -> bool:
    """2-D weights inside decoder layers: they get init_std/sqrt(m) and lr/m (MiniCPM paper Table 7)."""
    return param.dim() == 2 and ".layers." in f".{name}"
