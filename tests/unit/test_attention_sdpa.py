"""SDPAttention against megatron's local DotProductAttention (causal, GQA), alone and inside the MiniCPM model."""

from __future__ import annotations

import pytest
import torch

from bitcpm.frontend.compose import CommandLine, compose_job

pytestmark = [pytest.mark.quick, pytest.mark.filterwarnings("ignore::UserWarning")]


def _model_cfg():
    # debug size: 4 query heads sharing 2 KV groups (GQA), head_dim 64.
    return compose_job(CommandLine(), ["quant=none", "model.num_layers=2"]).model


def _pair(config):
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from bitcpm.models.minicpm.attention import SDPAttention

    args = {"config": config, "layer_number": 1, "attn_mask_type": AttnMaskType.causal, "attention_type": "self"}
    return DotProductAttention(**args), SDPAttention(**args)


def test_core_attention_matches_local_outputs_and_gradients(dist_cpu) -> None:
    from bitcpm.models.minicpm.model import transformer_config

    cfg = _model_cfg()
    local, sdpa = _pair(transformer_config(cfg))
    s, b, heads, groups, d = 24, 3, cfg.num_attention_heads, cfg.num_kv_heads, cfg.kv_channels
    assert heads != groups
    gen = torch.Generator().manual_seed(0)
    q0, k0, v0 = (torch.randn(s, b, n, d, generator=gen) for n in (heads, groups, groups))
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)[None, None]
    grads, outs = [], []
    for module in (local, sdpa):
        q, k, v = (t.clone().requires_grad_(True) for t in (q0, k0, v0))
        out = module(q, k, v, mask)
        out.backward(torch.ones_like(out) * torch.linspace(-1, 1, out.shape[-1]))
        outs.append(out)
        grads.append((q.grad, k.grad, v.grad))
    assert outs[0].shape == outs[1].shape == (s, b, heads * d)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Causality: the first position attends to itself only, so its context is its own value (head groups).
    torch.testing.assert_close(outs[1][0].view(b, heads, d), v0[0].repeat_interleave(heads // groups, dim=1))


def test_padding_mask_type_uses_the_mask(dist_cpu) -> None:
    from megatron.core.transformer.enums import AttnMaskType

    from bitcpm.models.minicpm.attention import SDPAttention
    from bitcpm.models.minicpm.model import transformer_config

    cfg = _model_cfg()
    module = SDPAttention(transformer_config(cfg), 1, AttnMaskType.padding, "self")
    s, d = 6, cfg.kv_channels
    q = torch.randn(s, 1, cfg.num_attention_heads, d)
    k, v = torch.randn(s, 1, cfg.num_kv_heads, d), torch.randn(s, 1, cfg.num_kv_heads, d)
    only_first = torch.ones(1, 1, s, s, dtype=torch.bool)
    only_first[..., 0] = False  # every query may attend to key 0 only
    out = module(q, k, v, only_first).view(s, cfg.num_attention_heads, d)
    expected = v[0, 0].repeat_interleave(cfg.num_attention_heads // cfg.num_kv_heads, dim=0)
    torch.testing.assert_close(out, expected.expand(s, -1, -1))


def test_whole_model_with_sdpa_spec_matches_local_spec(dist_cpu) -> None:
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from bitcpm.models import build_model
    from bitcpm.models.minicpm.attention import SDPAttention, minicpm_layer_spec
    from bitcpm.models.minicpm.model import transformer_config
    from bitcpm.models.minicpm.mup import apply_mup
    from bitcpm.training.steps import causal_mask

    cfg = _model_cfg()
    flash = build_model(cfg, seq_length=32).eval()  # bitcpm's spec: SDPA and its own RMSNorm
    local = GPTModel(
        config=transformer_config(cfg),
        transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
        vocab_size=cfg.vocab_size,
        max_sequence_length=cfg.max_position_embeddings,
        share_embeddings_and_output_weights=cfg.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=int(cfg.rope.theta),
        parallel_output=True,
    ).eval()
    apply_mup(local, cfg)
    local.load_state_dict(flash.state_dict())  # the same tensor names: megatron's spec and bitcpm's
    assert all(isinstance(layer.self_attention.core_attention, SDPAttention) for layer in flash.decoder.layers)
    tokens = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(32).unsqueeze(0).expand(2, -1)
    with torch.no_grad():
        want = local(input_ids=tokens, position_ids=pos, attention_mask=causal_mask(32, tokens.device))
        got = flash(input_ids=tokens, position_ids=pos, attention_mask=causal_mask(32, tokens.device))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # SDPA on every backend (on CPU it is faster than megatron's local attention, too).
    for device in ("cuda", "cpu", "npu"):
        assert minicpm_layer_spec(device).submodules.self_attention.submodules.core_attention is SDPAttention
