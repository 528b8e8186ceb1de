"""MiniCPM's muP ("Tensor Program") scalings, applied to a built megatron-core GPTModel.

The released modeling code multiplies the embedding output by scale_emb, every residual branch by
scale_depth / sqrt(num_layers), and divides the final hidden state by m = hidden_size /
dim_model_base before the LM head. They are forward hooks so the megatron layer spec stays stock and
a quantizer can swap the linear classes without knowing about muP.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bitcpm.config.model import ModelConfig


def residual_scale(cfg: ModelConfig) -> float:
    """Multiplier of each attention / MLP branch before it joins the residual stream."""
    return cfg.scale_depth / math.sqrt(cfg.num_layers)


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
    """Register the three forward scalings on a megatron GPTModel (or one pipeline stage of it)."""
    if getattr(model, "pre_process", True):
        model.embedding.register_forward_hook(_scale_output(cfg.scale_emb))
    branch = _scale_output(residual_scale(cfg))
    for layer in model.decoder.layers:
        layer.self_attention.linear_proj.register_forward_hook(branch)
        layer.mlp.linear_fc2.register_forward_hook(branch)
    if getattr(model, "post_process", True):
        model.output_layer.register_forward_pre_hook(_scale_first_input(1.0 / cfg.width_mult), with_kwargs=True)


def is_hidden_matrix(name: str, param: torch.nn.Parameter) -> bool:
    """2-D weights inside decoder layers: they get init_std/sqrt(m) and lr/m (MiniCPM paper Table 7)."""
    return param.dim() == 2 and ".layers." in f".{name}"


def lr_multiplier(name: str, param: torch.nn.Parameter, cfg: ModelConfig) -> float:
    """Per-tensor lr factor: 1/m for hidden matrices, 1 for embeddings, LM head and norms."""
    return 1.0 / cfg.width_mult if is_hidden_matrix(name, param) else 1.0
