"""The report command: find the study's runs in MLflow, write the PNG + markdown, attach them to the parent."""

from __future__ import annotations

from pathlib import Path

from bitcpm.windtunnel.lr_curves import Trial, markdown, plot_transfer, trial_of


def study_store(tracking) -> str:
    """The tracking URI holding a study; ValueError (one line, naming tracking.uri) when there is no such store."""
    from bitcpm.tracking.store_uri import unreadable_store
    from bitcpm.windtunnel.tracking import store_uri

    uri = store_uri(tracking)
    problem = unreadable_store(uri)
    if problem is not None:
        given = f"tracking.uri={tracking.uri}" if tracking.uri else f"tracking.uri (default {uri})"
        raise ValueError(f"{given}: {problem}")
    return uri


def study_trials(client, experiment: str, study: str) -> tuple[str, list[Trial], int]:
    """(parent run id, trials with a loss, number of children without one); ValueError if no such study."""
    from bitcpm.tracking.client import children
    from bitcpm.windtunnel.tracking import find_study_run

    parent = find_study_run(client, experiment, study)
    if parent is None:
        raise ValueError(f"study {study}: no parent run tagged bitcpm.study={study} in MLflow experiment {experiment}")
    runs = children(client, parent.info.run_id)
    trials = [t for t in (trial_of(r) for r in runs) if t is not None]
    return parent.info.run_id, trials, len(runs) - len(trials)


def run_report(study: str, overrides: list[str], out: Path) -> int:
    """Report `study` from the tracking store the overrides name; prints the markdown."""
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.tracking.client import log_files, open_client
    from bitcpm.windtunnel.tracking import experiment_name

    job = compose_job(CommandLine(), overrides, check_rules=False)
    if job.tracking.backend != "mlflow":
        raise ValueError("tracking.backend=none: the report reads the study from MLflow")
    client = open_client(study_store(job.tracking))
    parent, trials, skipped = study_trials(client, experiment_name(job.tracking), study)
    if not trials:
        raise ValueError(f"study {study}: none of its {skipped} trial runs has a validation loss yet")
    out.mkdir(parents=True, exist_ok=True)
    png = plot_transfer(trials, f"{study}: validation loss against lr per width", out / f"{study}_lr_width.png")
    text = markdown(study, trials, skipped) + f"\n![loss against lr per width]({png.name})\n"
    md = out / f"{study}_report.md"
    md.write_text(text)
    log_files(client, parent, [png, md], "report")
    print(text)
    print(f"report: {md} and {png} (also on MLflow run {parent}, artifacts report/)")
    return 0
