"""`predict` on a ladder of synthetic points (no training): the predictions and the gap printed, the pictures, the
record on the ladder's MLflow parent run, the target experiment that carries them, and actual losses once the target
runs have finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitcpm.config.derived import tokens_per_step
from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.rundir import run_dir_for
from bitcpm.plan.counts import count_params, flops_per_token
from bitcpm.windtunnel.cli import main
from bitcpm.windtunnel.ladder import FAMILY, LadderSpec, family_model, rung_model
from bitcpm.windtunnel.ladder_fit import Law

pytestmark = pytest.mark.quick

LAWS = {"none": Law(1.8, 60.0, 0.35, 400.0, 0.30), "ternary_g64": Law(1.9, 95.0, 0.35, 420.0, 0.30)}
WIGGLE = (0.002, -0.003, 0.001, 0.0, -0.001, 0.003, -0.002, 0.002, 0.0, -0.002, 0.001, 0.002)


def _ladder(root: Path) -> tuple[LadderSpec, list[str]]:
    """A finished ladder's points.json, its losses drawn from LAWS with a small fixed scatter."""
    where = [f"train.output_root={root / 'out'}", f"tracking.uri=sqlite:///{root / 'mlflow.db'}"]
    spec = LadderSpec("syn", (64, 128, 192, 256), tuple(LAWS), (100, 200, 400), 0.2, 16, (*FAMILY, *where))
    base = family_model(spec, CommandLine())
    points = []
    for width in spec.widths:
        job = compose_job(CommandLine(), [*spec.overrides, *rung_model(spec, base, width)], check_rules=False)
        n, per_step = count_params(job.model).non_embedding, tokens_per_step(job)
        for precision, law in LAWS.items():
            for i, steps in enumerate(spec.steps):
                d = steps * per_step
                loss = float(law(n, d)) * (1 + WIGGLE[(width // 64 - 1) * 3 + i])
                fpt = flops_per_token(job.model, job.train.seq_length)
                points.append({"width": width, "precision": precision, "n": n, "tokens": d, "loss": loss,
                               "flops_per_token": fpt, "steps": steps})  # fmt: skip
    folder = root / "out" / "ladders" / "syn"
    folder.mkdir(parents=True)
    (folder / "points.json").write_text(json.dumps({"spec": spec.to_dict(), "stable": [], "points": points}))
    return spec, where


def test_predict_records_the_prediction_writes_the_target_and_reads_its_actual_losses(tmp_path: Path, capsys) -> None:
    from bitcpm.tracking import client as mc

    spec, where = _ladder(tmp_path)
    client = mc.open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = mc.create_run(client, "windtunnel", "study-ladder-syn", {"bitcpm.study": "ladder-syn"})
    conf = tmp_path / "conf"
    args = ["predict", "syn", "--target", "384", "--steps", "400", "--replicates", "100", *where]
    assert main([*args, "--experiment", "syn_target", "--config-dir", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "| none | 12 | L(N, D) = " in out and "| ternary_g64 | 12 | " in out
    assert "Gap ternary_g64 - none at the target: +" in out
    assert "| 384 | " in out  # the gap against N reaches the target's size

    target = compose_job(CommandLine(config_dirs=[str(conf)]), ["experiment=syn_target", "quant=ternary_g64", *where])
    n, d = count_params(target.model).non_embedding, 400 * tokens_per_step(target)
    assert (target.model.hidden_size, target.train.steps, target.optim.decay_fraction) == (384, 400, 0.2)
    tags = target.tracking.tags
    predicted = {label: float(tags[f"bitcpm.predicted_loss.{label}"]) for label in LAWS}
    for label, law in LAWS.items():  # 2.25x the largest ladder size, extrapolated within 3%
        assert predicted[label] == pytest.approx(float(law(n, d)), rel=0.03)
        low, high = float(tags[f"bitcpm.predicted_low.{label}"]), float(tags[f"bitcpm.predicted_high.{label}"])
        assert low < predicted[label] < high
    assert tags["mlflow.parentRunId"] == parent and tags["bitcpm.ladder"] == "syn"

    metrics = client.get_run(parent).data.metrics
    assert metrics["pred/w384-s400/none/loss"] == pytest.approx(predicted["none"], rel=1e-5)
    assert metrics["pred/w384-s400/ternary_g64/gap"] > 0
    artifacts = {a.path for a in client.list_artifacts(parent, "predict/w384-s400")}
    names = ("loss_vs_compute.png", "gap_vs_n.png", "prediction.md")
    assert artifacts == {f"predict/w384-s400/{name}" for name in names}

    # The target trained (its runs' directories are the ones predict composes): actual losses beside the predictions.
    for label, factor in (("none", 1.002), ("ternary_g64", 1.2)):
        job = compose_job(CommandLine(config_dirs=[str(conf)]), ["experiment=syn_target", f"quant={label}", *where])
        run_dir_for(job).mkdir(parents=True)
        (run_dir_for(job) / "FINISHED").write_text(json.dumps({"val_loss": predicted[label] * factor}))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| +0.20% | yes | yes |" in out  # full precision: inside its interval, within 3%
    assert "| +20.00% | NO | NO |" in out
    assert client.get_run(parent).data.metrics["pred/w384-s400/none/error"] == pytest.approx(0.002, abs=1e-5)


def test_predict_errors_are_one_line(tmp_path: Path, capsys) -> None:
    where = f"train.output_root={tmp_path}"
    assert main(["predict", "nope", "--target", "384", "--steps", "400", where]) == 2
    assert "ladders/nope/points.json: no such ladder" in capsys.readouterr().err
    assert main(["predict", "nope", "--target", "384", "--steps", "400", "--tokens", "9", where]) == 2
    assert "--tokens T or as --steps S (one of them)" in capsys.readouterr().err
