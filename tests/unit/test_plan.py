"""Parameter and FLOP counts against published numbers; rank layout order."""

from __future__ import annotations

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.plan import count_params, flops_per_token, make_plan

pytestmark = pytest.mark.quick


@pytest.mark.parametrize(
    ("model", "total", "non_embedding"),
    [
        ("0.5b", 433.9e6, 358.66e6),  # tied; matches the 868 MB bf16 safetensors
        ("1b", 1.3603e9, 1.2474e9),  # MiniCPM paper Table 2
        ("8b", 8.19e9, 7.58e9),  # untied LM head
    ],
)
def test_published_parameter_counts(model: str, total: float, non_embedding: float) -> None:
    job = compose_job(CommandLine(), [f"model={model}", "quant=none"])
    counts = count_params(job.model)
    assert counts.total == pytest.approx(total, rel=0.01)
    assert counts.non_embedding == pytest.approx(non_embedding, rel=0.01)


def test_1b_non_embedding_matches_the_paper_exactly() -> None:
    job = compose_job(CommandLine(), ["model=1b", "quant=none"])
    assert count_params(job.model).non_embedding == 1_247_442_432  # MiniCPM paper Table 2, N


def test_flops_per_token_definition() -> None:
    job = compose_job(CommandLine(), ["model=1b", "quant=none"])
    m = job.model
    linears = 52 * (2 * 1536 * 1536 + 2 * 1536 * 512 + 3 * 1536 * 3840)
    head = m.vocab_size * m.hidden_size  # tied, but the LM head matmul still costs FLOPs
    assert flops_per_token(m, 4096) == 6 * (linears + head) + 6 * 52 * 4096 * 1536


def test_rank_layout_is_tp_fastest() -> None:
    job = compose_job(CommandLine(), ["parallel=tp2", "launcher.procs_per_node=4", "parallel.global_batch_size=16"])
    plan = make_plan(job)
    assert plan.world_size == 4 and plan.dp == 2
    assert [(r.tp, r.dp) for r in plan.layout] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert plan.micro_batches_per_step == 1


def test_the_plan_prints_the_optimizer_at_the_stage_s_own_lr() -> None:
    from bitcpm.plan.render import optimizer_lines

    qat = compose_job(CommandLine(), ["stage=qat", "dry_run=true"], check_rules=False)  # stage.lr 5e-3, optim.lr 1e-2
    lines = optimizer_lines(qat)
    assert lines[0].startswith("optimizer  AdamW, peak lr 0.005 (mup, m=2, stage.lr of qat)")
    assert "hidden matrices     lr 0.0025 " in lines[1]
    pretrain = optimizer_lines(compose_job(CommandLine(), [], check_rules=False))
    assert pretrain[0] == "optimizer  AdamW, peak lr 0.01 (mup, m=2):"
