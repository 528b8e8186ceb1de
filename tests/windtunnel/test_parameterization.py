"""model.parameterization: muP's width rules on the real engine, all of them off under sp; the untied head."""

from __future__ import annotations

import math

import pytest
import torch

from bitcpm.frontend.compose import CommandLine, compose_job

pytestmark = [pytest.mark.quick, pytest.mark.filterwarnings("ignore::UserWarning")]
WIDE = ["quant=none", "model.hidden_size=512", "model.dim_model_base=128", "model.num_layers=2"]


def _engine(*overrides: str):
    from bitcpm.training.build import build_engine

    job = compose_job(CommandLine(), [*WIDE, *overrides])
    engine = build_engine(job, 1, base_lr=0.01)
    model = engine.raw_chunks()[0]
    params = dict(model.named_parameters())
    name_of = {id(p): n for n, p in params.items()}
    lr_of = {name_of[id(p)]: g["lr"] for g in engine.optimizer.param_groups for p in g["params"]}
    return job, model, params, lr_of


def test_sp_has_no_width_rule_anywhere(dist_cpu) -> None:
    job, model, params, lr_of = _engine("model.parameterization=sp")
    std = job.model.init_std
    for name, p in params.items():
        if p.dim() == 2:
            assert p.std().item() == pytest.approx(std, rel=0.03), name
    assert all(lr == pytest.approx(0.01) for lr in lr_of.values())
    # No forward multipliers: the embedding output is the table row, the logits are h @ E^T.
    assert not model.embedding._forward_hooks and not model.output_layer._forward_pre_hooks
    assert all(not layer.mlp.linear_fc2._forward_hooks for layer in model.decoder.layers)


def test_mup_rules_and_the_untied_head(dist_cpu) -> None:
    job, model, params, lr_of = _engine("model.parameterization=mup", "model.tie_embeddings=false")
    m = job.model.width_mult
    assert m == 4
    assert params["decoder.layers.0.self_attention.linear_qkv.weight"].std().item() == pytest.approx(
        job.model.init_std / math.sqrt(m), rel=0.03
    )
    # The untied head is an output weight behind the 1/m logit multiplier: init_std and the base lr.
    assert params["output_layer.weight"].std().item() == pytest.approx(job.model.init_std, rel=0.03)
    assert lr_of["output_layer.weight"] == pytest.approx(0.01)
    assert lr_of["decoder.layers.1.mlp.linear_fc1.weight"] == pytest.approx(0.01 / m)
    seen = {}
    model.output_layer.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0]))
    tokens = torch.randint(0, job.model.vocab_size, (1, 9))
    from bitcpm.training.steps import model_inputs

    with torch.no_grad():
        model(**model_inputs(tokens))
        normed = model.decoder.final_layernorm.weight  # ones at init: RMSNorm output has unit rms
    assert normed.eq(1).all()
    rms = seen["x"].pow(2).mean().sqrt().item()
    assert rms == pytest.approx(1.0 / m, rel=0.05)  # the head reads the final hidden state divided by m
