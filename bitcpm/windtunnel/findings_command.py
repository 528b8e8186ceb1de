"""`python -m bitcpm.windtunnel findings STUDY`: read a QAT-findings study back from MLflow, judge it, report it.

The study is the parent run tagged bitcpm.study=STUDY; each trial is a child (a pipeline run for a recipe member)
holding its swept overrides as `override.*` params and its final validation loss. The arm is the finding's key, the
seed `study.seed` (or `train.seed`). The table, the verdict and the PNG go to --out and onto the parent run
(artifacts findings/).
"""

from __future__ import annotations

import math
from pathlib import Path

from bitcpm.windtunnel.qat_findings import FINDINGS, Finding, Result, arm_value, judge, markdown, plot

SEED_KEYS = ("override.study.seed", "override.train.seed")


def study_arms(client, experiment: str, study: str, key: str) -> tuple[str, dict[str, dict[int, float]]]:
    """(parent run id, arm -> seed -> final validation loss) of a study's finished trials."""
    from bitcpm.tracking.client import children
    from bitcpm.windtunnel.tracking import find_study_run

    parent = find_study_run(client, experiment, study)
    if parent is None:
        raise ValueError(f"study {study}: no parent run tagged bitcpm.study={study} in MLflow experiment {experiment}")
    arms: dict[str, dict[int, float]] = {}
    for run in children(client, parent.info.run_id):
        params, loss = run.data.params, run.data.metrics.get("final_val_loss")
        arm = params.get(f"override.{key}")
        seed = next((params[k] for k in SEED_KEYS if k in params), "0")
        if arm is None or loss is None or not math.isfinite(loss):
            continue  # a trial of another axis, or one without a loss (failed, pruned)
        arms.setdefault(arm_value(arm), {})[int(seed)] = float(loss)
    if not arms:
        raise ValueError(f"study {study}: none of its trials has override.{key} and a final validation loss")
    return parent.info.run_id, arms


def evaluate(client, experiment: str, study: str, finding: Finding) -> tuple[str, Result]:
    """Read the study (and its baseline study) and judge the finding."""
    parent, arms = study_arms(client, experiment, study, finding.key)
    baseline = None
    if finding.baseline:
        _, base_arms = study_arms(client, experiment, finding.baseline, finding.baseline_key)
        baseline = base_arms.get(arm_value(finding.baseline_arm))
        if not baseline:
            raise ValueError(
                f"study {finding.baseline}: no finished trial with {finding.baseline_key}={finding.baseline_arm}"
            )
    return parent, judge(finding, arms, baseline)


def run_findings(study: str, finding_name: str | None, overrides: list[str], out: Path) -> int:
    """Report a QAT-findings study from the store the overrides name; prints the section with its verdict."""
    findings_section(study, finding_name, overrides, out)
    return 0


def findings_section(study: str, finding_name: str | None, overrides: list[str], out: Path) -> str:
    """Judge the study, write and log its markdown and PNG, print both; returns the markdown."""
    from bitcpm.windtunnel.report_command import open_store, publish

    client, experiment = open_store(overrides, "the findings are")
    name = finding_name or study
    if name not in FINDINGS:
        raise ValueError(f"--finding: study {study} is none of {', '.join(FINDINGS)}: name the claim it tests")
    parent, result = evaluate(client, experiment, study, FINDINGS[name])
    out.mkdir(parents=True, exist_ok=True)
    png = plot(result, out / f"{study}_findings.png")
    text = markdown(result) + f"\n![{result.finding.title}]({png.name})\n"
    publish(client, parent, out / f"{study}_findings.md", png, text, "findings")
    return text
