"""config.json of a Hugging Face checkpoint <-> bitcpm's ModelConfig, for the `minicpm` and `llama` layouts.

The `minicpm` file carries what a MiniCPM4 download carries (scale_emb, scale_depth, dim_model_base,
rope_scaling with LongRoPE factors) for its remote code. The `llama` file carries no muP constants (they are
folded into the weights, bitcpm.models.minicpm.hf_layout) and states LongRoPE so that transformers computes
what MiniCPM's remote code computes: one factor list (the one MiniCPM's window selects) as both short and
long, and the remote code's cos/sin factor as attention_factor.
"""

from __future__ import annotations

import math
from typing import Any

from bitcpm.config.model import ModelConfig
from bitcpm.models.minicpm.rope import longrope_factors, longrope_mscale

MINICPM_AUTO_MAP = {
    "AutoConfig": "configuration_minicpm.MiniCPMConfig",
    "AutoModel": "modeling_minicpm.MiniCPMModel",
    "AutoModelForCausalLM": "modeling_minicpm.MiniCPMForCausalLM",
}
DTYPE_NAMES = {"bf16": "bfloat16", "fp32": "float32"}
# model_fields keys whose config.json name differs (rope.* factors live under rope_scaling).
HF_KEYS = {
    "num_layers": "num_hidden_layers",
    "num_kv_heads": "num_key_value_heads",
    "kv_channels": "head_dim",
    "norm_eps": "rms_norm_eps",
    "rope.theta": "rope_theta",
    "rope.type": "rope_scaling.rope_type",
}


def layout_of(hf: dict[str, Any]) -> str:
    """'minicpm' or 'llama' from config.json's model_type / architectures; ValueError otherwise."""
    kind = str(hf.get("model_type", "")).lower()
    archs = [str(a) for a in hf.get("architectures") or []]
    if kind == "minicpm" or any(a.startswith("MiniCPMFor") for a in archs):
        return "minicpm"
    if kind == "llama" or any(a.startswith("LlamaFor") for a in archs):
        return "llama"
    raise ValueError(f"model_type={kind or '?'} architectures={archs}: only minicpm and llama layouts are supported")


def _common(cfg: ModelConfig, bos_id: int | None, eos_id: int, dtype: str) -> dict[str, Any]:
    return {
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.kv_channels,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope.theta,
        "initializer_range": cfg.init_std,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": DTYPE_NAMES[dtype],
        "use_cache": True,
    }


def hf_config(cfg: ModelConfig, layout: str, *, bos_id: int | None, eos_id: int, dtype: str) -> dict[str, Any]:
    """config.json contents of `cfg` exported in `layout` with weights in `dtype` ('bf16' or 'fp32')."""
    out = _common(cfg, bos_id, eos_id, dtype)
    rope = cfg.rope
    if layout == "minicpm":
        out |= {
            "architectures": ["MiniCPMForCausalLM"],
            "model_type": "minicpm",
            "auto_map": MINICPM_AUTO_MAP,
            "scale_emb": cfg.scale_emb,
            "scale_depth": cfg.scale_depth,
            "dim_model_base": cfg.dim_model_base,
            "tie_word_embeddings": cfg.tie_embeddings,
        }
        if rope.type == "longrope":
            out["rope_scaling"] = {
                "rope_type": "longrope",
                "type": "longrope",
                "short_factor": list(rope.short_factor or []),
                "long_factor": list(rope.long_factor or []),
                "original_max_position_embeddings": rope.original_max_position_embeddings,
            }
        return out
    out |= {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "mlp_bias": False}
    out["tie_word_embeddings"] = False
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": rope.theta}
    if rope.type == "longrope":
        factors = longrope_factors(rope, cfg.max_position_embeddings)
        params = {
            "rope_type": "longrope",
            "rope_theta": rope.theta,
            "short_factor": factors,
            "long_factor": factors,
            "original_max_position_embeddings": rope.original_max_position_embeddings,
            "attention_factor": longrope_mscale(rope, cfg.max_position_embeddings),
        }
    out["rope_parameters"] = params
    return out


def model_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig fields a config.json fixes (muP constants neutral for the llama layout)."""
    layout = layout_of(hf)
    heads = int(hf["num_attention_heads"])
    hidden = int(hf["hidden_size"])
    layers = int(hf["num_hidden_layers"])
    head_dim = hf.get("head_dim") or hf.get("kv_channels") or hidden // heads
    fields: dict[str, Any] = {
        "hidden_size": hidden,
        "intermediate_size": int(hf["intermediate_size"]),
        "num_layers": layers,
        "num_attention_heads": heads,
        "num_kv_heads": int(hf.get("num_key_value_heads") or heads),
        "kv_channels": int(head_dim),
        "vocab_size": int(hf["vocab_size"]),
        "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
    }
    rope = dict(hf.get("rope_scaling") or {})
    params = dict(hf.get("rope_parameters") or {})
    rope_type = rope.get("rope_type") or rope.get("type") or params.get("rope_type") or "default"
    fields["rope.theta"] = float(hf.get("rope_theta") or params.get("rope_theta") or 10000.0)
    fields["rope.type"] = "longrope" if rope_type == "longrope" else rope_type
    if rope_type == "longrope":
        source = rope or params
        fields["rope.short_factor"] = [float(x) for x in source["short_factor"]]
        fields["rope.long_factor"] = [float(x) for x in source["long_factor"]]
        fields["rope.original_max_position_embeddings"] = int(source["original_max_position_embeddings"])
        fields["max_position_embeddings"] = int(hf["max_position_embeddings"])
    if layout == "minicpm":
        fields["scale_emb"] = float(hf.get("scale_emb", 1.0))
        fields["scale_depth"] = float(hf.get("scale_depth", math.sqrt(layers)))
        fields["dim_model_base"] = int(hf.get("dim_model_base", hidden))
    return fields


def hf_key(key: str) -> str:
    """The config.json name of a model_fields key."""
    return HF_KEYS.get(key, key.replace("rope.", "rope_scaling."))


def model_value(cfg: ModelConfig, key: str) -> Any:
    """The value of a dotted model_fields key in cfg."""
    if key == "kv_channels":
        return cfg.kv_channels
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def override_key(key: str) -> str:
    """The command-line key that sets a model_fields entry."""
    return "model.head_dim" if key == "kv_channels" else f"model.{key}"


def model_overrides(hf: dict[str, Any]) -> list[str]:
    """Command-line overrides that make a job's model the checkpoint's (muP constants and rope included)."""
    fields = model_fields(hf)
    tied = bool(hf.get("tie_word_embeddings", layout_of(hf) == "minicpm"))
    fields["tie_embeddings"] = tied
    if layout_of(hf) == "llama" and tied:
        # One matrix is both embedding and head: only neutral muP constants keep them one (scale_emb x m = 1).
        fields["scale_emb"], fields["dim_model_base"] = 1.0, fields["hidden_size"]
    out = []
    for key, value in fields.items():
        if isinstance(value, list):
            text = "[" + ",".join(repr(float(v)) for v in value) + "]"
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = repr(value) if isinstance(value, float) else str(value)
        out.append(f"{override_key(key)}={text}")
    return out
