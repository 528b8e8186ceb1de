"""Tiny Hugging Face checkpoints written by the tests, and a plain-torch forward of them.

The forward follows MiniCPM4's remote code (modeling_minicpm.py) on HF tensor names, written out here
without any bitcpm model code: embedding x scale_emb, pre-norm RMSNorm, rotate-half RoPE with LongRoPE
(factors picked by the window, cos/sin x sqrt(1 + ln(max/orig) / ln(orig))), GQA by repeating K/V,
branches x scale_depth / sqrt(L), final hidden / (hidden / dim_model_base) into the head.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

TINY = {
    "architectures": ["MiniCPMForCausalLM"],
    "model_type": "minicpm",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 8192,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "scale_emb": 12.0,
    "dim_model_base": 64,
    "scale_depth": 1.4,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}


def longrope_config(half: int, original: int) -> dict:
    """rope_scaling with distinct short and long factors (so picking the wrong list shows)."""
    short = [1.0 + 0.1 * i for i in range(half)]
    long = [1.0 + 0.7 * i for i in range(half)]
    return {
        "rope_type": "longrope",
        "short_factor": short,
        "long_factor": long,
        "original_max_position_embeddings": original,
    }


def write_minicpm_checkpoint(out: Path, seed: int = 0, **changes) -> Path:
    """config.json + model.safetensors of a random MiniCPM (minicpm layout); `changes` edit config.json."""
    from safetensors.torch import save_file

    cfg = {**TINY, "rope_scaling": longrope_config(TINY["head_dim"] // 2, 64), **changes}
    g = torch.Generator().manual_seed(seed)
    h, f, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv, v = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d, cfg["vocab_size"]

    def rnd(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    def norm():
        return 1.0 + 0.2 * torch.rand(h, generator=g)

    tensors = {"model.embed_tokens.weight": rnd(v, h, std=0.1), "model.norm.weight": norm()}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": norm(),
            p + "self_attn.q_proj.weight": rnd(q, h),
            p + "self_attn.k_proj.weight": rnd(kv, h),
            p + "self_attn.v_proj.weight": rnd(kv, h),
            p + "self_attn.o_proj.weight": rnd(h, q),
            p + "post_attention_layernorm.weight": norm(),
            p + "mlp.gate_proj.weight": rnd(f, h),
            p + "mlp.up_proj.weight": rnd(f, h),
            p + "mlp.down_proj.weight": rnd(h, f),
        }
    if not cfg.get("tie_word_embeddings", True):
        tensors["lm_head.weight"] = rnd(v, h, std=0.1)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def cos_sin(cfg: dict, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The remote code's cos/sin tables (LongRoPE when rope_scaling says so)."""
    d = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2).float() / d))
    t = torch.arange(seq, dtype=torch.float32)
    rope = cfg.get("rope_scaling") or {}
    scale = 1.0
    if rope.get("rope_type", rope.get("type")) == "longrope":
        original, window = rope["original_max_position_embeddings"], cfg["max_position_embeddings"]
        ext = torch.tensor(rope["long_factor"] if window > original else rope["short_factor"])
        freqs = torch.outer(t, 1.0 / ext) * inv_freq
        scale = math.sqrt(1 + math.log(window / original) / math.log(original))
    else:
        freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos() * scale, emb.sin() * scale


def reference_logits(directory: Path, tokens: torch.Tensor) -> torch.Tensor:
    """MiniCPM's forward of a minicpm-layout checkpoint directory, fp32."""
    from safetensors.torch import load_file

    cfg = json.loads((directory / "config.json").read_text())
    sd = {k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()}
    nh, nkv, L = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]
    d = cfg.get("head_dim") or cfg["hidden_size"] // nh
    eps = cfg["rms_norm_eps"]
    b, s = tokens.shape
    cos, sin = cos_sin(cfg, s)
    x = sd["model.embed_tokens.weight"][tokens] * cfg["scale_emb"]
    branch = cfg["scale_depth"] / math.sqrt(L)
    mask = torch.full((s, s), float("-inf")).triu(1)
    for i in range(L):
        p = f"model.layers.{i}."
        y = _rms(x, sd[p + "input_layernorm.weight"], eps)
        q = (y @ sd[p + "self_attn.q_proj.weight"].t()).view(b, s, nh, d).transpose(1, 2)
        k = (y @ sd[p + "self_attn.k_proj.weight"].t()).view(b, s, nkv, d).transpose(1, 2)
        v = (y @ sd[p + "self_attn.v_proj.weight"].t()).view(b, s, nkv, d).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, s, nh * d)
        x = x + (o @ sd[p + "self_attn.o_proj.weight"].t()) * branch
        y = _rms(x, sd[p + "post_attention_layernorm.weight"], eps)
        gate, up = y @ sd[p + "mlp.gate_proj.weight"].t(), y @ sd[p + "mlp.up_proj.weight"].t()
        x = x + ((F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].t()) * branch
    x = _rms(x, sd["model.norm.weight"], eps)
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
    return (x / (cfg["hidden_size"] / cfg["dim_model_base"])) @ head.t()
