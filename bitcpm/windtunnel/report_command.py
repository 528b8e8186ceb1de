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


def open_store(overrides: list[str], what: str) -> tuple[object, str]:
    """The MLflow client and experiment the tracking overrides name; ValueError (one line) when they name none."""
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.tracking.client import open_client
    from bitcpm.windtunnel.tracking import experiment_name

    job = compose_job(CommandLine(), overrides, check_rules=False)
    if job.tracking.backend != "mlflow":
        raise ValueError(f"tracking.backend=none: {what} read from MLflow")
    return open_client(study_store(job.tracking)), experiment_name(job.tracking)


def publish(client, parent: str, md: Path, png: Path, text: str, artifacts: str) -> None:
    """Write the markdown beside its picture, put both on the parent run (artifacts/), print where they are."""
    from bitcpm.tracking.client import log_files

    md.write_text(text)
    log_files(client, parent, [png, md], artifacts)
    print(text)
    print(f"{artifacts}: {md} and {png} (also on MLflow run {parent}, artifacts {artifacts}/)")


def run_report(study: str, overrides: list[str], out: Path) -> int:
    """Report `study` from the tracking store the overrides name; prints the markdown."""
    client, experiment = open_store(overrides, "the study is")
    parent, trials, skipped = study_trials(client, experiment, study)
    if not trials:
        raise ValueError(f"study {study}: none of its {skipped} trial runs has a validation loss yet")
    out.mkdir(parents=True, exist_ok=True)
    png = plot_transfer(trials, f"{study}: validation loss against lr per width", out / f"{study}_lr_width.png")
    text = markdown(study, trials, skipped) + f"\n![loss against lr per width]({png.name})\n"
    publish(client, parent, out / f"{study}_report.md", png, text, "report")
    return 0
