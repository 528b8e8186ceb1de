"""The stage length (train.steps, stage.tokens, stage.tokens=auto from the source run), as planned and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.config.load import job_to_yaml
from bitcpm.config.stage_length import stage_length
from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.submission import plan_text
from tests.support.finished_run import finished_run

pytestmark = pytest.mark.quick


def _job(*overrides: str):
    return compose_job(CommandLine(), list(overrides))


def _source_run(tmp_path: Path, *overrides: str) -> Path:
    """A finished pretrain run as the front end and the worker leave it: config.yaml and a complete checkpoint."""
    return finished_run(tmp_path / "pretrain", ["model=debug", *overrides], step=1000)


SOURCE = ["train.steps=1000", "optim.decay_fraction=0.1", "parallel.global_batch_size=8", "train.seq_length=256"]
MICRO_1 = "parallel.micro_batch_size=1"
QAT = ["model=debug", "stage=qat", "quant=ternary_g128", MICRO_1, "parallel.global_batch_size=4"]
QAT.append("train.seq_length=128")


@pytest.mark.parametrize("point_at", ["run", "checkpoint"])
def test_auto_tokens_are_twice_the_source_decay_and_the_plan_prints_them(tmp_path: Path, point_at: str):
    run = _source_run(tmp_path, *SOURCE)
    target = run if point_at == "run" else run / "checkpoints" / "step_00001000"
    job = _job(*QAT, f"stage.init_from={target}")
    decay_tokens = 100 * 8 * 256  # floor(0.1 x 1000) steps x 8 sequences x 256 tokens
    length = stage_length(job)
    assert length.known and length.steps == 2 * decay_tokens // (4 * 128)  # 800 steps of 512 tokens
    text = plan_text(job)
    assert "800 steps = 409.6K tokens (stage.tokens=auto: 2 x 204,800 decay tokens" in text
    assert "100 steps" not in text


def test_auto_tokens_agree_with_the_worker(tmp_path: Path):
    from bitcpm.training.stage import total_steps

    run = _source_run(tmp_path, *SOURCE, "optim.decay_fraction=0.25")
    job = _job(*QAT, f"stage.init_from={run}", "parallel.global_batch_size=3")
    # 2 x floor(0.25 x 1000) decay steps x 2,048 tokens, in steps of 3 x 128 tokens, rounded up
    assert total_steps(job) == stage_length(job).steps == 2667


def test_the_worker_honours_whole_number_tokens_of_the_source_run(tmp_path: Path):
    from bitcpm.training.stage import total_steps

    # the source trained for stage.tokens=1,024,000 (500 steps of 2,048), not its train.steps=1000
    run = _source_run(tmp_path, *SOURCE, "stage.tokens=1024000")
    job = _job(*QAT, f"stage.init_from={run}")
    assert total_steps(job) == 2 * 50 * 2048 // (4 * 128)  # 2 x floor(0.1 x 500) decay steps x 2,048 tokens


def test_the_worker_refuses_auto_tokens_without_the_source_run(tmp_path: Path):
    from bitcpm.frontend.pipeline import plan_pipeline
    from bitcpm.training.stage import total_steps

    overrides = ["experiment=debug_pipeline", f"train.output_root={tmp_path}"]
    cmd = CommandLine(overrides=overrides)
    qat = next(s for s in plan_pipeline(cmd, compose_job(cmd, overrides)) if s.name == "qat")
    with pytest.raises(ConfigError, match=r"^stage.init_from=.*: no complete checkpoint there$"):
        total_steps(qat.job)  # the plan may wait for the source; training never falls back to train.steps


def test_integer_tokens_round_up_to_whole_steps():
    job = _job("model=debug", "stage.tokens=1e6", MICRO_1, "parallel.global_batch_size=8", "train.seq_length=256")
    assert stage_length(job).steps == 489  # ceil(1e6 / 2048)
    assert "489 steps" in plan_text(job) and "(stage.tokens=1,000,000)" in plan_text(job)


def test_a_pipeline_stage_whose_source_has_not_run_yet_keeps_train_steps(tmp_path: Path):
    from bitcpm.frontend.pipeline import plan_pipeline

    overrides = ["experiment=debug_pipeline", f"train.output_root={tmp_path}"]
    cmd = CommandLine(overrides=overrides)
    qat = next(s for s in plan_pipeline(cmd, compose_job(cmd, overrides)) if s.name == "qat")
    length = stage_length(qat.job)
    assert not length.known and length.steps == qat.job.train.steps
    assert "read when it exists" in plan_text(qat.job)


@pytest.mark.parametrize("tokens", ["auto", "409600"])
def test_a_rewarmup_longer_than_the_derived_stage_is_refused(tmp_path: Path, tokens: str):
    run = _source_run(tmp_path, *SOURCE)
    base = [*QAT, f"stage.init_from={run}", f"stage.tokens={tokens}"]  # 800 steps either way, 80 of them decay
    _job(*base, "stage.rewarmup_steps=720")  # 720 + 80 = 800 still fits
    with pytest.raises(ConfigError, match=r"^stage.rewarmup_steps=721 \+ decay \(0.1 x 800\) exceeds the stage's 800"):
        _job(*base, "stage.rewarmup_steps=721")


def test_an_unreadable_source_config_is_one_line_naming_the_key(tmp_path: Path):
    run = _source_run(tmp_path, *SOURCE)
    (run / "config.yaml").write_text("train: {steps: 10}\n")  # a complete checkpoint, but no optim, no parallel
    with pytest.raises(ConfigError, match=r"^stage.tokens=auto: cannot read the source run's"):
        _job(*QAT, f"stage.init_from={run}")


def test_a_pipeline_checks_the_rewarmup_once_the_source_stage_has_run(tmp_path: Path, capsys):
    from bitcpm.frontend.pipeline import plan_pipeline, run_pipeline

    # pretrain 40 steps -> qat 2 x floor(0.2 x 40) = 16 steps (same batch shape); distill keeps its own 30 steps
    overrides = ["experiment=debug_pipeline", f"train.output_root={tmp_path}", "train.steps=40"]
    overrides.append("stage.rewarmup_steps=20")
    cmd = CommandLine(overrides=overrides)
    stages = plan_pipeline(cmd, compose_job(cmd, overrides))  # qat's source does not exist yet: not refused
    launched = []

    def finish(job, stage_overrides):  # a finished stage leaves its config and a complete checkpoint
        launched.append(job.stage.name)
        run_dir = next(s for s in stages if s.job is job).run_dir
        (run_dir / "checkpoints" / "step_00000040").mkdir(parents=True)
        (run_dir / "checkpoints" / "step_00000040" / "COMPLETE").write_text("")
        (run_dir / "config.yaml").write_text(job_to_yaml(job))
        return 0

    assert run_pipeline(stages, finish) == 2
    assert launched == ["pretrain"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("bitcpm: error: pipeline stage 'qat': stage.rewarmup_steps=20 + decay (0.2 x 16) exceeds")
