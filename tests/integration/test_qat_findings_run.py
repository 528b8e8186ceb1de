"""The QAT findings end to end at smoke size (`python -m bitcpm.windtunnel.qat_acceptance --smoke`): the QAT-lr and
QAT-fraction studies over two seeds, their shared arm trained once, every QAT run branched off its seed's stable
run with the data read on, the findings judged and put on the studies' MLflow runs, and a rerun of the fraction study
that adds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.tracking.client import children, open_client
from bitcpm.windtunnel.tracking import find_study_run
from tests.conftest import run_module

pytestmark = pytest.mark.integration


def test_qat_lr_and_fraction_studies_judged_from_mlflow_and_rerun_for_free(tmp_path: Path, data_cache: Path) -> None:
    args = ["--smoke", "--studies", "qat_lr,qat_fraction", "--seeds", "1,2", "--root", str(tmp_path)]
    args.append(f"data.cache_dir={data_cache}")
    proc = run_module("bitcpm.windtunnel.qat_acceptance", args, tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = tmp_path / "runs"
    stable = sorted(runs.glob("debug-pretrain-none-*"))
    qat = sorted(runs.glob("debug-qat-ternary_g64-*"))
    # Per seed: one stable run, QAT at 1e-2 and at 5e-3 from 60% (qat_lr), 5e-3 from 80% (qat_fraction, f = 0.2);
    # plus qat_scratch's ternary run from scratch (its full-precision arm is left out at smoke size).
    assert len(stable) == 2 and len(qat) == 3 * 2
    logs = [(d / "launch" / "worker.log").read_text() for d in qat]
    assert sum("data read on from its step 6" in log for log in logs) == 4  # f = 0.4 of 10 steps: from step 6
    assert sum("data read on from its step 8" in log for log in logs) == 2  # f = 0.2: from step 8

    report = (tmp_path / "findings.md").read_text()
    assert "## QAT learning rate (`qat_lr`)" in report and "## QAT-token fraction (`qat_fraction`)" in report
    assert report.count("**Verdict: ") == 2
    rows = [line for line in report.splitlines() if line.startswith(("| 0.2 |", "| 0.4 |", "| from scratch |"))]
    assert len(rows) == 3 and all("| 2 |" in row for row in rows), rows

    client = open_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = {name: find_study_run(client, "windtunnel", name) for name in ("qat_lr", "qat_fraction")}
    assert all(run is not None for run in study.values())
    artifacts = {a.path for a in client.list_artifacts(study["qat_fraction"].info.run_id, "findings")}
    assert artifacts == {"findings/qat_fraction_findings.md", "findings/qat_fraction_findings.png"}
    lr = children(client, study["qat_lr"].info.run_id)
    assert sorted(r.data.params["override.stage.lr"] for r in lr) == ["0.005", "0.005", "0.01", "0.01"]
    fraction = children(client, study["qat_fraction"].info.run_id)
    assert len(fraction) == 4 and all(r.info.status == "FINISHED" for r in fraction)
    # The arm both studies share trained once, under qat_lr; qat_fraction records its losses as they are.
    shared = [r for r in fraction if r.data.params["override.study.qat_fraction"] == "0.4"]
    assert {r.data.tags["bitcpm.trial_status"] for r in shared} == {"skipped"}
    assert {r.data.metrics["final_val_loss"] for r in shared} <= {r.data.metrics["final_val_loss"] for r in lr}

    again_args = [a if a != "qat_lr,qat_fraction" else "qat_fraction" for a in args]
    again = run_module("bitcpm.windtunnel.qat_acceptance", again_args, tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(children(client, study["qat_fraction"].info.run_id)) == 4  # found again, not recorded twice
    assert len(list(runs.glob("debug-*"))) == len(stable) + len(qat) + 2  # and no run directory more
