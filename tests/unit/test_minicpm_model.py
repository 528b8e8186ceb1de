"""The megatron-core MiniCPM against a plain-torch MiniCPM forward, muP init and lr rules, LongRoPE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bitcpm.config.model import ModelConfig
from bitcpm.frontend.compose import CommandLine, compose_job

pytestmark = [pytest.mark.quick, pytest.mark.filterwarnings("ignore::UserWarning")]


def _model_cfg(*overrides: str) -> ModelConfig:
    return compose_job(CommandLine(), ["quant=none", *overrides]).model


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    # x: [b, heads, s, d]; non-interleaved halves, as MiniCPM's and Llama's HF code.
    s = x.shape[2]
    freqs = torch.outer(torch.arange(s, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()


def reference_logits(sd: dict[str, torch.Tensor], cfg: ModelConfig, tokens: torch.Tensor, inv_freq: torch.Tensor):
    """MiniCPM's forward written out (modeling_minicpm semantics) on megatron's weight layout."""
    nh, nkv, hd, L = cfg.num_attention_heads, cfg.num_kv_heads, cfg.kv_channels, cfg.num_layers
    emb = sd["embedding.word_embeddings.weight"]
    x = emb[tokens] * cfg.scale_emb
    b, s = tokens.shape
    branch = cfg.scale_depth / math.sqrt(L)
    causal = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    for i in range(L):
        p = f"decoder.layers.{i}."
        y = _rms(x, sd[p + "input_layernorm.weight"], cfg.norm_eps)
        qkv = y @ sd[p + "self_attention.linear_qkv.weight"].t()
        # megatron packs q/k/v per KV group: [q of the group's heads, k, v]
        qkv = qkv.view(b, s, nkv, (nh // nkv + 2) * hd)
        q, k, v = torch.split(qkv, [nh // nkv * hd, hd, hd], dim=-1)
        q = q.reshape(b, s, nh, hd).transpose(1, 2)
        k = k.reshape(b, s, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
        v = v.reshape(b, s, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
        q, k = _rope(q, inv_freq), _rope(k, inv_freq)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(causal, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(b, s, nh * hd)
        x = x + (o @ sd[p + "self_attention.linear_proj.weight"].t()) * branch
        y = _rms(x, sd[p + "pre_mlp_layernorm.weight"], cfg.norm_eps)
        gate, up = (y @ sd[p + "mlp.linear_fc1.weight"].t()).chunk(2, dim=-1)
        x = x + ((F.silu(gate) * up) @ sd[p + "mlp.linear_fc2.weight"].t()) * branch
    x = _rms(x, sd["decoder.final_layernorm.weight"], cfg.norm_eps)
    head = emb if cfg.tie_embeddings else sd["output_layer.weight"]
    return (x / (cfg.hidden_size / cfg.dim_model_base)) @ head.t()


@pytest.mark.parametrize("tie", [True, False])
def test_forward_matches_plain_minicpm(dist_cpu, tie: bool) -> None:
    from bitcpm.models import build_model
    from bitcpm.training.steps import causal_mask

    cfg = _model_cfg("model.num_layers=2", f"model.tie_embeddings={str(tie).lower()}")
    model = build_model(cfg, seq_length=32).eval()
    with torch.no_grad():  # non-trivial norm weights, so a missing norm would show
        for name, p in model.named_parameters():
            if "layernorm" in name:
                p.uniform_(0.5, 1.5)
    tokens = torch.randint(0, cfg.vocab_size, (2, 32))
    with torch.no_grad():
        got = model(
            input_ids=tokens,
            position_ids=torch.arange(32)[None].expand(2, -1),
            attention_mask=causal_mask(32, torch.device("cpu")),
        )
        sd = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
        want = reference_logits(sd, cfg, tokens, model.rotary_pos_emb.inv_freq.float())
    torch.testing.assert_close(got.float(), want, rtol=2e-4, atol=2e-4)


def test_mup_init_and_lr_rules(dist_cpu) -> None:
    from bitcpm.training.build import build_engine

    job = compose_job(CommandLine(), ["quant=none", "model.hidden_size=512", "model.dim_model_base=128"])
    cfg = job.model
    m = cfg.width_mult
    assert m == 4
    engine = build_engine(job, 1, base_lr=0.01)  # megatron's optimizer with bitcpm's muP param-group overrides
    model = engine.raw_chunks()[0]
    params = dict(model.named_parameters())
    hidden = params["decoder.layers.0.mlp.linear_fc1.weight"]
    assert hidden.std().item() == pytest.approx(cfg.init_std / math.sqrt(m), rel=0.02)
    assert params["embedding.word_embeddings.weight"].std().item() == pytest.approx(cfg.init_std, rel=0.02)
    name_of = {id(p): n for n, p in params.items()}
    groups = engine.optimizer.param_groups
    lr_of = {name_of[id(p)]: g["lr"] for g in groups for p in g["params"]}
    wd_of = {name_of[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}
    assert len(lr_of) == len(params)
    assert lr_of["decoder.layers.1.self_attention.linear_qkv.weight"] == pytest.approx(0.01 / m)
    assert lr_of["decoder.layers.1.mlp.linear_fc2.weight"] == pytest.approx(0.01 / m)
    assert lr_of["embedding.word_embeddings.weight"] == pytest.approx(0.01)
    assert lr_of["decoder.final_layernorm.weight"] == pytest.approx(0.01)
    assert wd_of["decoder.layers.0.input_layernorm.weight"] == 0.0
    # muP's hidden matrices: decay x m, so that lr/m x decay is the base width's per-step shrink (MuAdamW).
    assert wd_of["decoder.layers.0.mlp.linear_fc1.weight"] == pytest.approx(
        job.optim.weight_decay * job.model.width_mult
    )


def test_longrope_divides_inverse_frequencies(dist_cpu) -> None:
    from bitcpm.models import build_model

    plain = _model_cfg("model.num_layers=1")
    half = plain.kv_channels // 2
    factors = [1.0 + i for i in range(half)]
    rope = [
        "model.num_layers=1",
        "model.rope.type=longrope",
        f"model.rope.short_factor={factors}",
        f"model.rope.long_factor={[2 * f for f in factors]}",
    ]
    base = build_model(plain, seq_length=32).rotary_pos_emb.inv_freq
    # As the remote code: the table is built for max_position_embeddings, so the window (not the sequence
    # at hand) picks the factors.
    within = [*rope, "model.max_position_embeddings=1024", "model.rope.original_max_position_embeddings=1024"]
    beyond = [*rope, "model.max_position_embeddings=1024", "model.rope.original_max_position_embeddings=64"]
    short = build_model(_model_cfg(*within), seq_length=32).rotary_pos_emb.inv_freq
    long = build_model(_model_cfg(*beyond), seq_length=32).rotary_pos_emb.inv_freq
    torch.testing.assert_close(short, base / torch.tensor(factors))
    torch.testing.assert_close(long, base / torch.tensor([2 * f for f in factors]))


def test_longrope_attention_factor_is_the_remote_codes(dist_cpu) -> None:
    from bitcpm.models.minicpm.model import transformer_config

    for original, expected in ((1024, 1.0), (64, 1.0 + math.log(1024 / 64) / math.log(64))):
        cfg = _model_cfg(
            "model.rope.type=longrope",
            f"model.rope.short_factor={[1.0] * 32}",
            f"model.rope.long_factor={[1.0] * 32}",
            "model.max_position_embeddings=1024",
            f"model.rope.original_max_position_embeddings={original}",
        )
        # cos and sin both carry sqrt(expected): every q.k logit carries `expected`.
        scale = transformer_config(cfg).softmax_scale
        assert scale == pytest.approx(expected / math.sqrt(cfg.kv_channels), rel=1e-12)
    assert transformer_config(_model_cfg()).softmax_scale is None


def test_8b_preset_carries_the_shipped_longrope_factors() -> None:
    cfg = _model_cfg("model=8b")
    assert cfg.rope.type == "longrope" and len(cfg.rope.short_factor) == 64
    assert cfg.rope.short_factor[0] == pytest.approx(0.9977997200264581)
    assert cfg.rope.short_factor[21] == pytest.approx(4.615569542115128)  # the shipped list, not the 131k one
    assert cfg.rope.short_factor == cfg.rope.long_factor


def test_converter_swaps_only_targets(dist_cpu) -> None:
    from bitcpm.config.quant import QuantConfig
    from bitcpm.models import build_model
    from bitcpm.quant.converter import TernaryColumnParallelLinear, TernaryRowParallelLinear, convert_to_ternary

    cfg = _model_cfg("model.num_layers=1")
    model = build_model(cfg, seq_length=16)
    names = convert_to_ternary(
        model, QuantConfig(method="ternary", group_size=64, targets=["linear_qkv", "linear_fc2"])
    )
    assert names == ["decoder.layers.0.self_attention.linear_qkv", "decoder.layers.0.mlp.linear_fc2"]
    layer = model.decoder.layers[0]
    assert isinstance(layer.self_attention.linear_qkv, TernaryColumnParallelLinear)
    assert isinstance(layer.mlp.linear_fc2, TernaryRowParallelLinear)
    assert not isinstance(layer.self_attention.linear_proj, TernaryRowParallelLinear)
    assert not isinstance(model.output_layer, TernaryColumnParallelLinear)
    with pytest.raises(ValueError, match="matched no module"):
        convert_to_ternary(build_model(cfg, seq_length=16), QuantConfig(method="ternary", targets=["nothing"]))
