"""Memory and step-time estimates against hand-computed values; the plan shows them for every launcher."""

from __future__ import annotations

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.submission import launch_refusal, plan_text
from bitcpm.plan import count_params, flops_per_token, make_plan
from bitcpm.plan.estimate import MFU_ASSUMED, step_seconds
from bitcpm.plan.memory import (
    estimate_memory,
    in_flight_stages,
    layer_activation_bytes,
    memory_overflow,
    stage_param_counts,
)
from tests.support.finished_run import finished_run

pytestmark = pytest.mark.quick


def _job(*overrides: str):
    return compose_job(CommandLine(), list(overrides))


def _memory(*overrides: str):
    return estimate_memory(_job(*overrides))


def test_bf16_holds_fp32_main_grads_main_weights_and_adam_moments():
    est = _memory("model=1b", "hardware=h100", "quant=none", "parallel.micro_batch_size=1")
    params = count_params(est_model := _job("model=1b").model).total
    assert est_model.tie_embeddings and est.params == params
    assert est.weights == 2 * params  # bf16 weights
    assert est.grads == 4 * params  # megatron DDP's fp32 main_grad buffer (grad_reduce_in_fp32)
    assert est.main_weights == 4 * params and est.optimizer == 8 * params  # fp32 main + Adam m, v
    assert est.quant_weights == 0


def test_fp32_weights_are_their_own_main_weights():
    est = _memory("model=debug", "quant=none")
    params = count_params(_job("model=debug").model).total
    assert (est.weights, est.grads, est.main_weights, est.optimizer) == (4 * params, 4 * params, 0, 8 * params)


def test_distributed_optimizer_shards_main_weights_and_adam_over_dp():
    base = ["model=1b", "hardware=h100", "quant=none", "launcher.procs_per_node=8", "parallel.global_batch_size=64"]
    sharded = _memory(*base)  # null: on where dp > 1
    replicated = _memory(*base, "parallel.distributed_optimizer=false")
    assert sharded.main_weights == pytest.approx(replicated.main_weights / 8)
    assert sharded.optimizer == pytest.approx(replicated.optimizer / 8)
    assert (sharded.weights, sharded.grads) == (replicated.weights, replicated.grads)  # never sharded
    single = _memory("model=1b", "hardware=h100", "quant=none", "parallel.distributed_optimizer=true")
    assert single.optimizer == replicated.optimizer  # dp=1: nothing to shard over


def test_tensor_and_pipeline_parallel_split_the_weights():
    job = _job("model=8b")
    all_params, linear = stage_param_counts(job.model, tp=1, pp=1, stage=0)
    assert all_params == count_params(job.model).total
    tp4, _ = stage_param_counts(job.model, tp=4, pp=1, stage=0)
    assert tp4 == pytest.approx(all_params / 4, rel=0.01)  # norms are replicated, the rest splits
    pp4, _ = stage_param_counts(job.model, tp=1, pp=4, stage=3)
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
    none = _memory(*base)
    full = _memory(*base, "parallel.recompute=full")
    assert full.activations == none.activations_by_recompute["full"] < none.activations


def test_distill_counts_the_teacher_from_its_preset(tmp_path):
    run = finished_run(tmp_path / "run", ["model=1b", "quant=none"])
    args = ["model=1b", "hardware=h100", "stage=distill", f"stage.init_from={run}", f"stage.teacher_from={run}"]
    without = _memory(*args)
    teacher = _memory(*args, "stage.teacher_model=8b")
    j = _job(*args, "stage.teacher_model=8b")
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


def test_pipeline_schedules_hold_their_warmup_micro_batches_in_flight():
    base = ["model=8b", "hardware=h100", "launcher.procs_per_node=8", "parallel.pp=4", "parallel.tp=2"]
    base.append("parallel.micro_batch_size=1")
    plain = _job(*base, "parallel.global_batch_size=32")  # dp=1: 32 micro-batches per step
    assert [in_flight_stages(plain, r) for r in range(4)] == [4, 3, 2, 1]  # 1F1B: pp - rank
    interleaved = _job(*base, "parallel.global_batch_size=32", "parallel.virtual_pp=2")
    # megatron's interleaved warmup on rank 0: 2(pp-1) + (v-1)pp chunks, plus the one in flight, of L/(pp v) layers
    assert in_flight_stages(interleaved, 0) == (2 * 3 + 1 * 4 + 1) / 2
    first = estimate_memory(plain)
    per_layer = layer_activation_bytes(plain.model, 256, 1, 2, False, "none", 2)
    assert first.stage == 0 and first.activations == pytest.approx(8 * 4 * per_layer)  # 8 layers x 4 in flight


def test_pipeline_bubble_stretches_the_step_time():
    base = ["model=1b", "hardware=h100", "quant=none", "launcher.procs_per_node=8", "parallel.global_batch_size=64"]
    base.append("parallel.micro_batch_size=1")
    flat = _job(*base, "parallel.tp=8")
    piped = _job(*base, "parallel.tp=2", "parallel.pp=4")  # dp=1, 64 micro-batches
    interleaved = _job(*base, "parallel.tp=4", "parallel.pp=2", "parallel.virtual_pp=2")  # 52 layers in 4 chunks
    ideal = step_seconds(flat, make_plan(flat))
    assert make_plan(piped).bubble == pytest.approx(3 / 64)
    assert step_seconds(piped, make_plan(piped)) == pytest.approx(ideal * (1 + 3 / 64))
    assert step_seconds(interleaved, make_plan(interleaved)) == pytest.approx(ideal * (1 + 1 / 128))
    assert "pipeline bubble 4.7%" in plan_text(piped)


SEED_8B = [
    "model=8b",
    "parallel.tp=2",
    "parallel.micro_batch_size=1",
    "parallel.global_batch_size=512",
    "hardware=npu",
    "launcher=ascend",
    "launcher.nodes=2",
]


@pytest.mark.parametrize("pp", [1, 2, 4])
def test_the_8b_two_node_npu_job_fits_with_the_distributed_optimizer(pp: int):
    job = _job(*SEED_8B, f"parallel.pp={pp}")
    est = estimate_memory(job)
    assert est.total < 64e9 and memory_overflow(job) is None
    assert "WARNING" not in plan_text(job)
    replicated = _job(*SEED_8B, f"parallel.pp={pp}", "parallel.distributed_optimizer=false")
    if pp == 1:  # each rank holding its own fp32 main weights and Adam state does not fit
        assert memory_overflow(replicated) is not None


def test_a_plan_that_does_not_fit_refuses_to_launch(tmp_path, monkeypatch, capsys):
    from bitcpm.train import main

    monkeypatch.chdir(tmp_path)
    args = ["model=8b", "hardware=h100", "quant=none", "tracking=none"]
    assert main([*args, "dry_run=true"]) == 0  # dry_run still prints the plan, with the warning
    assert "WARNING" in capsys.readouterr().out
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exceeds hardware.memory_gb=80" in err[0] and "hardware.allow_memory_overflow" in err[0]
    assert not (tmp_path / "outputs").exists()  # nothing was written or launched
    assert main(["-m", *args, "train.seed=1,2"]) == 2  # a study starts none of its members
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exceeds hardware.memory_gb=80" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert launch_refusal(_job(*args, "hardware.allow_memory_overflow=true")) is None
