"""Memory and step-time estimates against hand-computed values; the plan shows them for every launcher."""

from __future__ import annotations

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.submission import plan_text
from bitcpm.plan import count_params, flops_per_token, make_plan
from bitcpm.plan.estimate import (
    MFU_ASSUMED,
    estimate_memory,
    layer_activation_bytes,
    stage_params,
    step_seconds,
)
from tests.support.finished_run import finished_run


def _job(*overrides: str):
    return compose_job(CommandLine(), list(overrides))


def test_weights_grads_and_adam_are_16_bytes_per_parameter_in_bf16():
    job = _job("model=1b", "hardware=h100", "quant=none", "parallel.micro_batch_size=1")
    est = estimate_memory(job, make_plan(job))
    params = count_params(job.model).total
    assert est.weights == 2 * params and est.grads == 2 * params
    assert est.optimizer == 12 * params  # fp32 master + m + v
    assert est.quant_weights == 0


def test_fp32_has_no_master_copy():
    job = _job("model=debug", "quant=none")
    est = estimate_memory(job, make_plan(job))
    params = count_params(job.model).total
    assert (est.weights, est.grads, est.optimizer) == (4 * params, 4 * params, 8 * params)


def test_tensor_and_pipeline_parallel_split_the_weights():
    job = _job("model=8b")
    all_params, linear = stage_params(job.model, tp=1, pp=1)
    assert all_params == count_params(job.model).total
    tp4, _ = stage_params(job.model, tp=4, pp=1)
    assert tp4 == pytest.approx(all_params / 4, rel=0.01)  # norms are replicated, the rest splits
    pp4, _ = stage_params(job.model, tp=1, pp=4)
    c = count_params(job.model)
    assert pp4 == 8 * (c.attention_per_layer + c.mlp_per_layer + 2 * 4096) + 4096 + c.lm_head  # last stage


def test_activation_formula_by_hand():
    m = _job("model=8b").model  # h=4096 a=32 k=2 d=128 f=16384
    s, b, e = 4096, 1, 2
    linear = e * s * b * (4 * 4096 + 2 * 32 * 128 + 2 * 2 * 128 + 3 * 16384)
    scores = e * 32 * s * s * b
    assert layer_activation_bytes(m, s, b, 1, False, "none", e) == linear + scores
    assert layer_activation_bytes(m, s, b, 1, False, "selective", e) == linear
    assert layer_activation_bytes(m, s, b, 1, False, "full", e) == e * s * b * 4096
    tp2 = layer_activation_bytes(m, s, b, 2, False, "none", e)
    tp2_sp = layer_activation_bytes(m, s, b, 2, True, "none", e)
    assert tp2_sp == pytest.approx((linear + scores) / 2) and tp2 > tp2_sp


def test_recompute_setting_chooses_the_activation_figure():
    base = ["model=1b", "hardware=h100", "train.seq_length=4096", "parallel.micro_batch_size=2"]
    none = estimate_memory(j := _job(*base), make_plan(j))
    full = estimate_memory(j := _job(*base, "parallel.recompute=full"), make_plan(j))
    assert full.activations == none.activations_by_recompute["full"] < none.activations


def test_distill_counts_the_teacher_from_its_preset(tmp_path):
    run = finished_run(tmp_path / "run", ["model=1b", "quant=none"])
    args = ["model=1b", "hardware=h100", "stage=distill", f"stage.init_from={run}", f"stage.teacher_from={run}"]
    without = estimate_memory(j := _job(*args), make_plan(j))
    teacher = estimate_memory(j := _job(*args, "stage.teacher_model=8b"), make_plan(j))
    assert without.teacher == 0
    assert teacher.teacher > 2 * 8.0e9  # 8B frozen bf16 weights plus its logits
    assert "distill teacher 8b" in plan_text(j)


def test_step_time_from_peak_and_assumed_mfu():
    job = _job("model=1b", "hardware=h100", "launcher.procs_per_node=8", "parallel.global_batch_size=64")
    plan = make_plan(job)
    expected = flops_per_token(job.model, 256) * 64 * 256 / 8 / (989e12 * MFU_ASSUMED)
    assert step_seconds(job, plan) == pytest.approx(expected)
    full = _job(
        "model=1b",
        "hardware=h100",
        "launcher.procs_per_node=8",
        "parallel.global_batch_size=64",
        "parallel.recompute=full",
    )
    assert step_seconds(full, make_plan(full)) == pytest.approx(expected * 4 / 3)
    assert step_seconds(_job(), make_plan(_job())) is None  # cpu: no peak, no estimate


def test_memory_warning_past_the_device():
    job = _job("model=8b", "hardware=h100", "quant=none", "train.seq_length=4096", "parallel.micro_batch_size=1")
    text = plan_text(job)
    assert "WARNING" in text and "exceeds hardware.memory_gb=80" in text
    small = _job("model=debug", "hardware=h100")
    assert "WARNING" not in plan_text(small)


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_plan_shows_memory_step_time_and_the_launch(launcher: str):
    job = _job(f"launcher={launcher}", "parallel=tp2", "hardware=h100", "parallel.global_batch_size=8")
    text = plan_text(job)
    assert "memory     per device" in text and "step time  ~" in text
    assert "node 0: ranks 0-1" in text
    assert f"launch     {launcher}" in text
    assert ("launchers.elastic" in text) if launcher == "local" else ("#SBATCH --gpus-per-node=2" in text)
