"""megatron-core GPTModel tensors <-> Hugging Face tensors, in the `minicpm` and the `llama` layout.

`minicpm` is the layout of a MiniCPM4 / BitCPM4 download (MiniCPMForCausalLM, remote code): the weights
as trained, the muP constants in config.json. `llama` folds the constants into the weights so a plain
LlamaForCausalLM computes the same function: scale_emb into the embedding, scale_depth / sqrt(L) into
o_proj and down_proj, 1 / m (m = hidden_size / dim_model_base) into an lm_head of its own. A scalar times
ternary x scale is still ternary, with the scale multiplied.

megatron fuses q/k/v into one matrix grouped per KV head: for each of the num_kv_heads groups, the rows of
its num_heads / num_kv_heads query heads, then its key head, then its value head. gate/up are fused as
[gate; up]. Names and shapes here need no torch (the preflight check reads them); tensor code imports it.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from bitcpm.config.model import ModelConfig

if TYPE_CHECKING:
    import torch

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
# megatron name inside a layer -> HF names inside a layer (split tensors map to several)
_LAYER_NAMES = {
    "input_layernorm.weight": ("input_layernorm.weight",),
    "self_attention.linear_qkv.weight": (
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
    ),
    "self_attention.linear_proj.weight": ("self_attn.o_proj.weight",),
    "pre_mlp_layernorm.weight": ("post_attention_layernorm.weight",),
    "mlp.linear_fc1.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "mlp.linear_fc2.weight": ("mlp.down_proj.weight",),
}
_GLOBAL_NAMES = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
    "output_layer.weight": "lm_head.weight",
}


def residual_multiplier(cfg: ModelConfig) -> float:
    """scale_depth / sqrt(L): what MiniCPM multiplies each attention / MLP branch by."""
    return cfg.scale_depth / math.sqrt(cfg.num_layers)


def hf_names(megatron_name: str) -> tuple[str, ...]:
    """HF tensor names holding a megatron tensor (global layer index in the name)."""
    m = _LAYER.match(megatron_name)
    if m:
        index, rest = m.groups()
        if rest not in _LAYER_NAMES:
            raise KeyError(f"no Hugging Face name for megatron tensor {megatron_name}")
        return tuple(f"model.layers.{index}.{n}" for n in _LAYER_NAMES[rest])
    if megatron_name not in _GLOBAL_NAMES:
        raise KeyError(f"no Hugging Face name for megatron tensor {megatron_name}")
    return (_GLOBAL_NAMES[megatron_name],)


def hf_shapes(cfg: ModelConfig, layout: str, with_head: bool) -> dict[str, list[int]]:
    """Every HF tensor of `cfg` in `layout` with its shape; with_head adds lm_head.weight."""
    h, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.kv_channels
    q, kv = cfg.num_attention_heads * d, cfg.num_kv_heads * d
    out = {"model.embed_tokens.weight": [cfg.vocab_size, h], "model.norm.weight": [h]}
    per_layer = {
        "input_layernorm.weight": [h],
        "self_attn.q_proj.weight": [q, h],
        "self_attn.k_proj.weight": [kv, h],
        "self_attn.v_proj.weight": [kv, h],
        "self_attn.o_proj.weight": [h, q],
        "post_attention_layernorm.weight": [h],
        "mlp.gate_proj.weight": [f, h],
        "mlp.up_proj.weight": [f, h],
        "mlp.down_proj.weight": [h, f],
    }
    for i in range(cfg.num_layers):
        out |= {f"model.layers.{i}.{k}": v for k, v in per_layer.items()}
    if with_head:
        out["lm_head.weight"] = [cfg.vocab_size, h]
    return out


def split_qkv(w: torch.Tensor, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v projections from megatron's per-group fused matrix."""
    groups, d = cfg.num_kv_heads, cfg.kv_channels
    per = cfg.num_attention_heads // groups
    grouped = w.reshape(groups, (per + 2) * d, w.shape[-1])
    q = grouped[:, : per * d].reshape(groups * per * d, -1)
    k = grouped[:, per * d : (per + 1) * d].reshape(groups * d, -1)
    v = grouped[:, (per + 1) * d :].reshape(groups * d, -1)
    return q, k, v


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """megatron's per-group fused matrix from q, k, v projections."""
    import torch

    groups, d = cfg.num_kv_heads, cfg.kv_channels
    per = cfg.num_attention_heads // groups
    cols = q.shape[-1]
    parts = (q.reshape(groups, per * d, cols), k.reshape(groups, d, cols), v.reshape(groups, d, cols))
    return torch.cat(parts, dim=1).reshape(-1, cols)


def _fold(cfg: ModelConfig, layout: str) -> dict[str, float]:
    """Multipliers applied to megatron tensors on the way to `layout` (keys: megatron name suffixes)."""
    if layout == "minicpm":
        return {}
    branch = residual_multiplier(cfg)
    return {
        "embedding.word_embeddings.weight": cfg.scale_emb,
        "self_attention.linear_proj.weight": branch,
        "mlp.linear_fc2.weight": branch,
        "head": 1.0 / cfg.width_mult,
    }


def _factor(fold: dict[str, float], name: str) -> float:
    m = _LAYER.match(name)
    return fold.get(m.group(2) if m else name, 1.0)


def to_hf(state: dict[str, torch.Tensor], cfg: ModelConfig, layout: str) -> dict[str, torch.Tensor]:
    """HF state dict from a full (tensor-parallel merged) megatron state dict with global layer indices."""
    fold = _fold(cfg, layout)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith("_extra_state"):
            continue
        t = tensor * _factor(fold, name) if _factor(fold, name) != 1.0 else tensor
        targets = hf_names(name)
        if name.endswith("linear_qkv.weight"):
            out |= dict(zip(targets, split_qkv(t, cfg), strict=True))
        elif name.endswith("linear_fc1.weight"):
            out |= dict(zip(targets, t.chunk(2, dim=0), strict=True))
        else:
            out[targets[0]] = t
    head = state.get("output_layer.weight")
    if layout == "llama":
        # Llama's head is always its own tensor: the 1/m fold would otherwise change the embedding too.
        source = head if head is not None else state["embedding.word_embeddings.weight"]
        out["lm_head.weight"] = source * fold["head"]
    return {k: v.contiguous() for k, v in out.items()}


def from_hf(
    tensors: dict[str, torch.Tensor], cfg: ModelConfig, layout: str, names: list[str]
) -> dict[str, torch.Tensor]:
    """Full megatron tensors named `names` (global layer indices) from an HF state dict; inverse of to_hf."""
    fold = _fold(cfg, layout)
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "output_layer.weight":
            t = tensors["lm_head.weight"] if "lm_head.weight" in tensors else tensors["model.embed_tokens.weight"]
            out[name] = t / fold["head"] if layout == "llama" else t
            continue
        sources = [tensors[n] for n in hf_names(name)]
        if name.endswith("linear_qkv.weight"):
            t = fuse_qkv(*sources, cfg)
        elif name.endswith("linear_fc1.weight"):
            import torch

            t = torch.cat(sources, dim=0)
        else:
            t = sources[0]
        factor = _factor(fold, name)
        out[name] = t / factor if factor != 1.0 else t
    return out
