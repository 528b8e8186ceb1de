"""stage.branch_step (a WSD decay branch) and stage.init_step (QAT off a stable phase): the rules and pre-launch
checks that hold each to its source run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.rundir import math_relevant
from tests.support.finished_run import finished_run

pytestmark = pytest.mark.quick

STABLE = ["train.steps=8", "optim.decay_fraction=0", "optim.warmup_steps=2"]
BRANCH = ["train.steps=10", "optim.decay_fraction=0.2", "optim.warmup_steps=2"]


def _branch(source: Path, *extra: str) -> None:
    compose_job(CommandLine(), [*BRANCH, f"stage.init_from={source}", "stage.branch_step=8", *extra])


def test_a_branch_of_its_stable_run_composes_and_plain_runs_keep_their_hash(tmp_path: Path) -> None:
    source = finished_run(tmp_path / "stable", STABLE, step=8)
    _branch(source)
    assert "branch_step" not in math_relevant(compose_job(CommandLine(), BRANCH))["stage"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stage.branch_step=8"], "stage.branch_step=8 needs stage.init_from"),
        (["stage.init_from=x", "stage.branch_step=9"], "no later than the start of this run's decay (step 8"),
        (["stage.init_from=x", "stage.branch_step=0"], "stage.branch_step=0"),
    ],
)
def test_branch_rules(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        compose_job(CommandLine(), [*BRANCH, *overrides])


def test_the_source_run_must_be_the_same_training_but_for_length_and_decay(tmp_path: Path) -> None:
    source = finished_run(tmp_path / "other_lr", [*STABLE, "optim.lr=0.02"], step=8)
    with pytest.raises(ConfigError, match=r"has optim\.lr=0\.02, this job 0\.01: a branch changes only the length"):
        _branch(source)


def test_the_source_run_must_still_be_stable_at_the_branch_step(tmp_path: Path) -> None:
    source = finished_run(
        tmp_path / "decayed", ["train.steps=8", "optim.decay_fraction=0.5", "optim.warmup_steps=2"], step=8
    )
    with pytest.raises(ConfigError, match="decays its lr from step 4: branch from a stable phase"):
        _branch(source)


def test_the_checkpoint_of_the_branch_step_must_be_there(tmp_path: Path) -> None:
    source = finished_run(tmp_path / "stable", STABLE, step=4)
    with pytest.raises(ConfigError, match="no complete checkpoint of step 8 .* \\(complete: step_00000004;"):
        _branch(source)


QAT = [
    "stage=qat",
    "quant=ternary_g64",
    "train.steps=10",
    "optim.warmup_steps=2",
    "stage.tokens=null",
    "stage.rewarmup_steps=1",
]


def test_qat_from_a_chosen_step_of_a_stable_run_composes_and_plain_runs_keep_their_hash(tmp_path: Path) -> None:
    source = finished_run(tmp_path / "stable", ["quant=none", *STABLE], step=4)
    job = compose_job(CommandLine(), [*QAT, f"stage.init_from={source}", "stage.init_step=4"])
    assert (job.stage.init_step, job.stage.branch_step) == (4, None)
    assert math_relevant(job)["stage"]["init_step"] == 4
    assert "init_step" not in math_relevant(compose_job(CommandLine(), BRANCH))["stage"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["stage=pretrain", "stage.init_step=4"], "stage.init_step=4 needs stage.init_from"),
        (["stage.init_from=x", "stage.init_step=4", "stage.branch_step=4"], "set one of them"),
        (["stage.init_from=x", "stage.init_step=4", "stage.tokens=auto"], "stage.init_step: stage.tokens=auto"),
        (["stage.init_from=x", "stage.init_step=0"], "stage.init_step=0"),
    ],
)
def test_init_step_rules(overrides: list[str], message: str) -> None:
    base = QAT if "stage=pretrain" not in overrides else BRANCH
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        compose_job(CommandLine(), [*base, *overrides])


def test_the_checkpoint_of_the_init_step_must_be_there(tmp_path: Path) -> None:
    source = finished_run(tmp_path / "stable", ["quant=none", *STABLE], step=4)
    with pytest.raises(ConfigError, match=r"no complete checkpoint of step 6 \(stage.init_step\) there"):
        compose_job(CommandLine(), [*QAT, f"stage.init_from={source}", "stage.init_step=6"])


@pytest.mark.parametrize("changed", ["train.seq_length=64", "parallel.global_batch_size=16"])
def test_the_data_goes_on_only_with_the_source_s_sequences_and_batch(tmp_path: Path, changed: str) -> None:
    source = finished_run(tmp_path / "stable", ["quant=none", *STABLE], step=4)
    with pytest.raises(ConfigError, match=r"stage.init_step: the source run .* has .*: the data goes on"):
        compose_job(CommandLine(), [*QAT, f"stage.init_from={source}", "stage.init_step=4", changed])
