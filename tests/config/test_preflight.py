"""Pre-launch checks beyond the config's own values: files, tokenizer, source checkpoints, optional packages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from tests.support.config_errors import config_error
from tests.support.finished_run import finished_run

pytestmark = pytest.mark.quick


def test_missing_data_input_names_the_source_key(tmp_path: Path) -> None:
    good = tmp_path / "a.jsonl"
    good.write_text(json.dumps({"text": "hello"}) + "\n" + json.dumps({"text": "world"}) + "\n")  # train + valid
    message = config_error(
        [f"data.sources=[{{inputs: [{good}]}}, {{name: b, inputs: [builtin, {tmp_path}/none.jsonl]}}]"]
    )
    assert message.startswith("data.sources[1].inputs: ") and "none.jsonl not found" in message


def test_tokenizer_that_does_not_load(tmp_path: Path) -> None:
    assert "data.tokenizer=" in config_error([f"data.tokenizer={tmp_path}"])
    (tmp_path / "tokenizer.json").write_text("{not json")
    assert config_error([f"data.tokenizer={tmp_path}"]).startswith(f"data.tokenizer={tmp_path}: ")


def test_tokenizer_larger_than_the_embedding() -> None:
    assert "do not fit model.vocab_size=4096" in config_error(["model.vocab_size=4096"])


def test_init_from_must_hold_a_complete_checkpoint(tmp_path: Path) -> None:
    assert "no such checkpoint" in config_error(["stage=qat", f"stage.init_from={tmp_path}/nothing"])
    run = finished_run(tmp_path / "run")
    (run / "checkpoints" / "step_00000004" / "COMPLETE").unlink()
    assert "no complete checkpoint there" in config_error(["stage=qat", f"stage.init_from={run}"])


@pytest.mark.parametrize("point_at", ["run", "checkpoint"])
def test_init_from_model_must_match(tmp_path: Path, point_at: str) -> None:
    run = finished_run(tmp_path / "run", ["model.num_layers=3"])
    source = run if point_at == "run" else run / "checkpoints" / "step_00000004"
    message = config_error(["stage=qat", f"stage.init_from={source}"])
    assert message.startswith(f"stage.init_from={source}: its model.num_layers=3 differs")
    compose_job(CommandLine(), ["stage=qat", f"stage.init_from={source}", "model.num_layers=3"])


def test_teacher_needs_only_the_same_vocabulary(tmp_path: Path) -> None:
    student = finished_run(tmp_path / "student")
    wide = finished_run(tmp_path / "wide", ["model.hidden_size=128"])
    other_vocab = finished_run(tmp_path / "vocab", ["model.vocab_size=9000"])
    base = ["stage=distill", f"stage.init_from={student}"]
    compose_job(CommandLine(), [*base, f"stage.teacher_from={wide}"])
    assert "model.vocab_size=9000 differs" in config_error([*base, f"stage.teacher_from={other_vocab}"])


def test_checkpoint_without_its_config(tmp_path: Path) -> None:
    run = finished_run(tmp_path / "run")
    (run / "config.yaml").unlink()
    assert "config.yaml not found" in config_error(["stage=qat", f"stage.init_from={run}"])


def test_a_pipeline_stage_may_start_from_a_run_not_yet_made(tmp_path: Path) -> None:
    later = tmp_path / "made-by-stage-1"
    compose_job(CommandLine(), ["stage=qat", f"stage.init_from={later}"], planned_runs=frozenset({later}))


def test_missing_optional_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # importlib then reports it as not installed
    assert config_error(["launcher=slurm"]) == "launcher=slurm needs the submitit package: pip install 'bitcpm[slurm]'"
    compose_job(CommandLine(), ["launcher=slurm", "dry_run=true"])  # a plan needs no submitit
