"""Mixed precision is megatron's: bf16 weights with fp32 main weights, so updates below bf16 resolution add up."""

from __future__ import annotations

import pytest
import torch

from bitcpm.config.validate import validate
from bitcpm.frontend.compose import CommandLine, compose_job

pytestmark = pytest.mark.quick


def _job(*overrides: str):
    # Synthetic batches of a 512-token vocabulary: the config rules apply, the shipped tokenizer does not.
    job = compose_job(
        CommandLine(),
        [
            "quant=none",
            "model.num_layers=2",
            "model.hidden_size=128",
            "model.intermediate_size=256",
            "model.dim_model_base=64",
            "model.vocab_size=8192",
            "train.seq_length=16",
            "parallel.micro_batch_size=2",
            "parallel.global_batch_size=4",
            "hardware.dtype=bfloat16",
            *overrides,
        ],
        check_rules=False,
    )
    validate(job)
    return job


def _batches(step: int, vocab: int = 8192) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return [torch.randint(0, vocab, (2, 17), generator=gen) for _ in range(2)]


def _pairs(engine) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(bf16 model weight, fp32 main weight) pairs of megatron's Float16OptimizerWithFloat16Params."""
    from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params

    (inner,) = engine.optimizer.chained_optimizers
    assert isinstance(inner, Float16OptimizerWithFloat16Params)
    pairs = []
    for model_group, main_group in zip(inner.float16_groups, inner.fp32_from_float16_groups, strict=True):
        pairs += list(zip(model_group, main_group, strict=True))
    return pairs


def test_bf16_model_holds_fp32_main_weights(dist_cpu) -> None:
    from bitcpm.training.build import build_engine
    from bitcpm.training.steps import train_step

    engine = build_engine(_job(), 1, 1e-2)
    pairs = _pairs(engine)
    n_params = sum(1 for _ in engine.raw_chunks()[0].parameters())
    assert len(pairs) == n_params  # every weight (norms too) is bf16 with an fp32 master
    for step in range(3):
        assert train_step(engine, _batches(step)).finite
    for model_w, main_w in pairs:
        assert model_w.dtype == torch.bfloat16 and main_w.dtype == torch.float32
        assert torch.equal(model_w, main_w.to(torch.bfloat16))
    assert any(not torch.equal(m.float(), w) for m, w in pairs), "the masters carry bits bf16 cannot hold"


def test_updates_below_bf16_resolution_still_move_the_weights(dist_cpu) -> None:
    from bitcpm.training.build import build_engine, set_lr
    from bitcpm.training.steps import train_step

    lr = 4e-5  # hidden matrices get lr / m = 2e-5 per Adam step: below half a bf16 step for |w| > 0.02
    engine = build_engine(_job("optim.weight_decay=0.0"), 1, lr)
    set_lr(engine.optimizer, lr, 1.0, 0.0)
    weight = dict(engine.raw_chunks()[0].named_parameters())["decoder.layers.0.mlp.linear_fc1.weight"]
    start = weight.detach().clone()
    coarse = start.float().abs() > 0.02
    assert coarse.sum() > 1000
    train_step(engine, _batches(0))
    assert torch.equal(weight[coarse], start[coarse]), "one update is below bf16 resolution there"
    for step in range(1, 30):
        train_step(engine, _batches(step))
    moved = (weight[coarse] != start[coarse]).float().mean().item()
    assert moved > 0.05, f"only {moved:.1%} of the bf16 weights moved: fp32 main weights are not accumulating"
