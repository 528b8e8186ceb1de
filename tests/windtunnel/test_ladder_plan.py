"""The ladder's plan, without training: every run and its directory, a rerun that plans nothing new, a wider ladder
that adds only the new width's runs; the spec's own checks and the command's dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitcpm.config.load import job_to_yaml
from bitcpm.config.validate import ConfigError
from bitcpm.windtunnel.cli import main
from bitcpm.windtunnel.ladder import LadderPlan, LadderSpec, plan_ladder

pytestmark = pytest.mark.quick

TINY = ("data=tunnel", "model.vocab_size=512", "model.num_layers=2", "model.dim_model_base=32", "tracking=none")


def _spec(root: Path, widths: tuple[int, ...], steps: tuple[int, ...] = (5, 10)) -> LadderSpec:
    overrides = (*TINY, "optim.warmup_steps=2", f"train.output_root={root}")
    return LadderSpec("t", widths, ("none", "ternary_g32"), steps, 0.2, 16, overrides)


def _finish(plan: LadderPlan) -> None:
    """Leave every planned run as a finished worker leaves it (config, marker; stable runs their checkpoints)."""
    for rung in plan.runs:
        rung.run_dir.mkdir(parents=True, exist_ok=True)
        (rung.run_dir / "config.yaml").write_text(job_to_yaml(rung.job))
        (rung.run_dir / "FINISHED").write_text(json.dumps({"step": rung.steps, "val_loss": 5.0}))
        if rung.kind == "stable":
            for k in plan.spec.branch_points.values():
                checkpoint = rung.run_dir / "checkpoints" / f"step_{k:08d}"
                checkpoint.mkdir(parents=True, exist_ok=True)
                (checkpoint / "COMPLETE").write_text(f"{k}\n")


def test_a_rerun_plans_nothing_new_and_a_wider_ladder_only_the_new_width(tmp_path: Path) -> None:
    plan = plan_ladder(_spec(tmp_path, (32, 64)))
    assert [(r.width, r.job.quant.label) for r in plan.stable] == [
        (32, "none"),
        (64, "none"),
        (32, "ternary_g32"),
        (64, "ternary_g32"),
    ]
    assert len(plan.branches) == 8 and len({r.run_dir for r in plan.runs}) == 12
    assert len(plan.todo()) == 12
    stable = plan.stable[1]
    assert (stable.job.train.steps, stable.job.optim.decay_fraction) == (8, 0.0)  # the last branch point, no decay
    assert (stable.job.train.save_interval, stable.job.train.keep_checkpoints) == (4, 2)  # both branch points kept
    branches = [r for r in plan.branches if r.width == 64 and r.precision == "none"]
    assert [(b.job.train.steps, b.job.stage.branch_step) for b in branches] == [(5, 4), (10, 8)]
    assert {b.job.stage.init_from for b in branches} == {str(stable.run_dir)}
    assert all(b.job.optim.decay_fraction == 0.2 for b in branches)

    _finish(plan)
    again = plan_ladder(_spec(tmp_path, (32, 64)))
    assert [r.run_dir for r in again.runs] == [r.run_dir for r in plan.runs]
    assert again.todo() == []

    wider = plan_ladder(_spec(tmp_path, (32, 64, 96)))
    new = wider.todo()
    assert {(r.kind, r.width) for r in new} == {("stable", 96), ("branch", 96)} and len(new) == 6
    assert {r.run_dir for r in wider.runs} - {r.run_dir for r in new} == {r.run_dir for r in plan.runs}


def test_a_branch_point_the_finished_stable_run_did_not_keep_is_named(tmp_path: Path) -> None:
    _finish(plan_ladder(_spec(tmp_path, (32,))))
    # Budget 8 branches at step 7: the same 8-step stable runs, which kept steps 4 and 8 only.
    with pytest.raises(ConfigError, match=r"no complete checkpoint of step 7 .*complete: step_00000004, step_00000008"):
        plan_ladder(_spec(tmp_path, (32,), (5, 8, 10)))


@pytest.mark.parametrize(
    ("steps", "fraction", "message"),
    [
        ((5, 5), 0.2, "expected distinct budgets"),
        ((5, 10), 1.5, "--decay-fraction=1.5"),
        ((3, 10), 0.2, "each budget needs a stable part and a decay"),
    ],
)
def test_the_spec_checks_its_budgets(steps: tuple[int, ...], fraction: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LadderSpec("t", (32,), ("none",), steps, fraction)


def test_budgets_without_a_common_divisor_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would keep 403 checkpoints"):
        plan_ladder(_spec(tmp_path, (32,), (502, 503)))


def test_the_dry_run_says_what_would_train_and_writes_nothing(tmp_path: Path, capsys) -> None:
    args = ["ladder", "--name", "t", "--widths", "32,64", "--precisions", "none", "--steps", "5,10", "--dry-run"]
    assert main([*args, *TINY, "optim.warmup_steps=2", f"train.output_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "ladder t: 2 widths x 1 precisions x 2 budgets" in out
    assert "ladder t: 6 of 6 runs to train; dry run, nothing started" in out
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit) as stop:  # refused by the argument's kind, before anything is planned
        main(["ladder", "--steps", "5,x"])
    assert stop.value.code == 2
    assert "argument --steps: '5,x': expected comma-separated integers" in capsys.readouterr().err


def test_a_finished_ladder_trains_nothing_and_records_its_points_on_its_parent_run(tmp_path: Path, capsys) -> None:
    from bitcpm.tracking import client as mc
    from bitcpm.windtunnel.ladder import FAMILY
    from bitcpm.windtunnel.tracking import find_study_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = ("optim.warmup_steps=2", f"train.output_root={tmp_path / 'out'}", f"tracking.uri={uri}")
    spec = LadderSpec("t", (32, 64), ("none",), (5, 10), 0.2, 16, (*FAMILY, *extra))
    _finish(plan_ladder(spec))
    args = ["ladder", "--name", "t", "--widths", "32,64", "--precisions", "none", "--steps", "5,10", *extra]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ladder t: 0 of 6 runs to train" in out and out.count("finished earlier, skipped") == 6
    points = json.loads((tmp_path / "out" / "ladders" / "t" / "points.json").read_text())
    assert sorted((p["width"], p["tokens"], p["loss"]) for p in points["points"]) == [
        (w, s * 8 * 128, 5.0) for w in (32, 64) for s in (5, 10)
    ]
    assert LadderSpec.from_dict(points["spec"]) == spec
    client = mc.open_client(uri)
    parent = find_study_run(client, "windtunnel", "ladder-t")
    assert parent.info.status == "FINISHED" and parent.data.metrics["points"] == 4
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "ladder")] == ["ladder/points.json"]
