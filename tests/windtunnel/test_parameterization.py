"""model.parameterization: muP's width rules on the real engine, only those off under sp (the same network at the
base width); the untied head; hidden matrices' weight decay per step and eps under muP."""

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


def test_sp_has_no_width_rule_and_keeps_the_rest(dist_cpu) -> None:
    job, model, params, lr_of = _engine("model.parameterization=sp")
    std = job.model.init_std
    for name, p in params.items():
        if p.dim() == 2:
            assert p.std().item() == pytest.approx(std, rel=0.03), name
    assert all(lr == pytest.approx(0.01) for lr in lr_of.values())
    # No 1/m before the head; scale_emb and the residual scale stay (they are not width rules).
    assert not model.output_layer._forward_pre_hooks
    assert model.embedding._forward_hooks
    assert all(layer.mlp.linear_fc2._forward_hooks for layer in model.decoder.layers)


def _losses(parameterization: str, width: int, steps: int = 4) -> list[float]:
    from bitcpm.training.build import build_engine
    from bitcpm.training.steps import train_step

    heads = [f"model.num_attention_heads={width // 32}", "model.num_kv_heads=2", "model.head_dim=32"]
    overrides = [*WIDE, f"model.hidden_size={width}", *heads, f"model.parameterization={parameterization}"]
    job = compose_job(CommandLine(), overrides)
    engine = build_engine(job, 1, base_lr=0.02)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, job.model.vocab_size, (4, 33), generator=gen)
    return [train_step(engine, [batch]).loss for _ in range(steps)]


def test_sp_is_mup_at_the_base_width_and_differs_away_from_it(dist_cpu) -> None:
    assert _losses("sp", 128) == _losses("mup", 128)  # m = 1: the same network, bit for bit
    assert _losses("sp", 256, steps=2) != _losses("mup", 256, steps=2)


def test_hidden_matrix_decay_per_step_does_not_change_with_width_under_mup(dist_cpu) -> None:
    """Zero gradients make Adam's update zero, so one step shrinks each weight by decay alone: 1 - lr x wd."""
    from bitcpm.training.build import build_engine

    shrink = {}
    for width in (128, 512):
        job = compose_job(CommandLine(), [*WIDE, f"model.hidden_size={width}", "optim.weight_decay=0.5"])
        engine = build_engine(job, 1, base_lr=0.02)
        model = engine.raw_chunks()[0]
        weight = dict(model.named_parameters())["decoder.layers.0.mlp.linear_fc1.weight"]
        before = weight.detach().clone()
        for chunk in engine.model:
            chunk.zero_grad_buffer()
        engine.optimizer.zero_grad()
        for p in model.parameters():  # a zero gradient everywhere, as the DDP buffer hands it to the optimizer
            p.main_grad = torch.zeros_like(p)
        engine.optimizer.step()
        ratio = weight.detach() / before
        shrink[width] = 1 - ratio.mean().item()
        assert ratio.std().item() < 1e-6  # decay only: every element shrinks by the same factor
        hidden = next(g for g in engine.optimizer.param_groups if any(p is weight for p in g["params"]))
        assert hidden["eps"] == pytest.approx(job.optim.eps / job.model.width_mult)
    assert shrink[128] == pytest.approx(0.02 * 0.5, rel=1e-4)  # m = 1 at 128: lr x wd
    assert shrink[512] == pytest.approx(shrink[128], rel=1e-4)  # lr / 4 with decay x 4


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
