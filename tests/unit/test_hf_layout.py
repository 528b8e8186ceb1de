"""megatron <-> HF tensor mapping: fused qkv per KV group, gate/up, muP folding, config round trip."""

from __future__ import annotations

import math

import pytest
import torch

from bitcpm.config.model import ModelConfig, RopeConfig
from bitcpm.models.minicpm.hf_config import hf_config, model_fields, model_overrides
from bitcpm.models.minicpm.hf_layout import from_hf, fuse_qkv, hf_shapes, split_qkv, to_hf

pytestmark = pytest.mark.quick


def _cfg(**changes) -> ModelConfig:
    base = dict(
        name="t",
        hidden_size=64,
        intermediate_size=96,
        num_layers=2,
        num_attention_heads=4,
        num_kv_heads=2,
        head_dim=16,
        vocab_size=50,
        tie_embeddings=False,
        scale_emb=12.0,
        dim_model_base=16,
        scale_depth=1.4,
    )
    return ModelConfig(**(base | changes))


def _megatron_state(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    d, h = cfg.kv_channels, cfg.hidden_size
    qkv_rows = (cfg.num_attention_heads + 2 * cfg.num_kv_heads) * d
    state = {"embedding.word_embeddings.weight": torch.randn(cfg.vocab_size, h, generator=g)}
    for i in range(cfg.num_layers):
        p = f"decoder.layers.{i}."
        state |= {
            p + "input_layernorm.weight": torch.rand(h, generator=g),
            p + "self_attention.linear_qkv.weight": torch.randn(qkv_rows, h, generator=g),
            p + "self_attention.linear_proj.weight": torch.randn(h, cfg.num_attention_heads * d, generator=g),
            p + "pre_mlp_layernorm.weight": torch.rand(h, generator=g),
            p + "mlp.linear_fc1.weight": torch.randn(2 * cfg.intermediate_size, h, generator=g),
            p + "mlp.linear_fc2.weight": torch.randn(h, cfg.intermediate_size, generator=g),
        }
    state["decoder.final_layernorm.weight"] = torch.rand(h, generator=g)
    if not cfg.tie_embeddings:
        state["output_layer.weight"] = torch.randn(cfg.vocab_size, h, generator=g)
    return state


def test_qkv_split_follows_megatrons_group_layout() -> None:
    cfg = _cfg()
    d, per = cfg.kv_channels, cfg.num_attention_heads // cfg.num_kv_heads
    # row r of the fused matrix holds the value r: the split must pick rows group by group
    fused = torch.arange((cfg.num_attention_heads + 2 * cfg.num_kv_heads) * d).float()[:, None].expand(-1, 3)
    q, k, v = split_qkv(fused, cfg)
    group = (per + 2) * d
    assert q[:, 0].tolist() == [g * group + i for g in range(2) for i in range(per * d)]
    assert k[:, 0].tolist() == [g * group + per * d + i for g in range(2) for i in range(d)]
    assert v[:, 0].tolist() == [g * group + (per + 1) * d + i for g in range(2) for i in range(d)]
    assert torch.equal(fuse_qkv(q, k, v, cfg), fused)


@pytest.mark.parametrize("layout", ["minicpm", "llama"])
@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_and_folding(layout: str, tied: bool) -> None:
    cfg = _cfg(tie_embeddings=tied)
    state = _megatron_state(cfg)
    hf = to_hf(state, cfg, layout)
    with_head = layout == "llama" or not tied
    assert {k: list(v.shape) for k, v in hf.items()} == hf_shapes(cfg, layout, with_head=with_head)
    branch = cfg.scale_depth / math.sqrt(cfg.num_layers)
    emb = state["embedding.word_embeddings.weight"]
    head = emb if tied else state["output_layer.weight"]
    if layout == "llama":
        torch.testing.assert_close(hf["model.embed_tokens.weight"], emb * cfg.scale_emb)
        torch.testing.assert_close(hf["lm_head.weight"], head / cfg.width_mult)
        down = state["decoder.layers.1.mlp.linear_fc2.weight"] * branch
    else:
        assert torch.equal(hf["model.embed_tokens.weight"], emb)
        down = state["decoder.layers.1.mlp.linear_fc2.weight"]
    torch.testing.assert_close(hf["model.layers.1.mlp.down_proj.weight"], down)
    gate = state["decoder.layers.0.mlp.linear_fc1.weight"][: cfg.intermediate_size]
    torch.testing.assert_close(hf["model.layers.0.mlp.gate_proj.weight"], gate * 1.0)
    back = from_hf(hf, cfg, layout, list(state))
    for name, tensor in state.items():
        torch.testing.assert_close(back[name], tensor, rtol=1e-6, atol=1e-6)


def test_config_round_trip_keeps_mup_and_longrope() -> None:
    rope = RopeConfig(
        type="longrope", short_factor=[1.0] * 8, long_factor=[2.0] * 8, original_max_position_embeddings=64
    )
    cfg = _cfg(rope=rope, max_position_embeddings=256)
    fields = model_fields(hf_config(cfg, "minicpm", bos_id=0, eos_id=1, dtype="bf16"))
    assert fields["scale_emb"] == 12.0 and fields["dim_model_base"] == 16 and fields["rope.long_factor"] == [2.0] * 8
    llama = hf_config(cfg, "llama", bos_id=0, eos_id=1, dtype="fp32")
    params = llama["rope_parameters"]
    # transformers picks factors by sequence length; MiniCPM by the window: both lists are the window's
    assert params["short_factor"] == params["long_factor"] == [2.0] * 8
    assert params["attention_factor"] == pytest.approx(math.sqrt(1 + math.log(4) / math.log(64)))
    assert "model.tie_embeddings=false" in model_overrides(llama)
