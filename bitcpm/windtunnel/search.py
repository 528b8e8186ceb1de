"""`python -m bitcpm.windtunnel search STUDY`: an Optuna (ask/tell) study whose trials are bitcpm runs.

Each trial is `python -m bitcpm.train` in a subprocess. The driver reads the validation losses the
training loop already writes to RUN_DIR/metrics.jsonl, reports them to Optuna, and stops a pruned
trial with SIGTERM (the worker saves and exits 75). The study lives in a sqlite database beside the
MLflow store: a killed driver, restarted, keeps every finished trial, and a trial it left running is
asked again with the same values, so its run directory resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bitcpm.training.metrics_log import read_metrics
from bitcpm.windtunnel.space import Param, grid_points, trial_overrides

PREEMPTED = 75  # the worker's exit code after a SIGTERM: saved, not finished
POLL_S = 0.5


@dataclass
class SearchArgs:
    """What the search command was asked for."""

    study: str
    params: list[Param]
    trials: int | None
    sampler: str
    prune: bool
    parallel: int
    threads: int | None
    seed: int
    storage: str | None
    overrides: list[str] = field(default_factory=list)


@dataclass
class Running:
    """A trial whose training subprocess is alive."""

    trial: object
    run_dir: Path
    overrides: list[str]
    proc: subprocess.Popen
    reported: set[int] = field(default_factory=set)
    pruned: bool = False
    linked: bool = False
    """Whether its MLflow run already carries the study's parent tag."""


def default_storage(job) -> str:
    """sqlite:///<dir of the MLflow sqlite store>/optuna.db, else under train.output_root."""
    from bitcpm.tracking.store_uri import sqlite_path
    from bitcpm.windtunnel.tracking import store_uri

    database = sqlite_path(store_uri(job.tracking)) if job.tracking.backend == "mlflow" else None
    folder = database.parent if database is not None else Path(job.train.output_root) / "windtunnel"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def open_study(args: SearchArgs, storage: str):
    """Create or load the Optuna study; trials a killed driver left RUNNING are failed and re-enqueued."""
    import optuna
    from optuna.trial import TrialState

    sampler = optuna.samplers.TPESampler(seed=args.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if args.prune else None
    study = optuna.create_study(
        study_name=args.study, storage=storage, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"resumes_trial": t.number})
    if args.sampler == "grid":
        # A grid is the queue of its points (Optuna's GridSampler stops the study from inside tell(),
        # which only works under study.optimize); points already asked are not queued again.
        seen = [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False)]
        for point in grid_points(args.params):
            if point not in seen:
                study.enqueue_trial(point)
                seen.append(point)
    return study


def _compose(overrides: list[str]):
    from bitcpm.frontend.compose import CommandLine, compose_job

    return compose_job(CommandLine(), overrides)


def plan_trial(args: SearchArgs, study, base_model) -> tuple[object, list[str], Path]:
    """Ask Optuna for a trial and compose + validate its job (a bad value fails the trial, not the study)."""
    from bitcpm.frontend.rundir import run_dir_for

    trial = study.ask({p.key: p.distribution() for p in args.params})
    name = f"tracking.run_name={args.study}-t{trial.number}"
    overrides = [*args.overrides, *trial_overrides(trial.params, base_model), name]
    return trial, overrides, run_dir_for(_compose(overrides))


def start(trial, overrides: list[str], run_dir: Path, threads: int) -> Running:
    """Launch one trial's training in its own process group."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log = open(run_dir / "windtunnel_trial.log", "a")  # noqa: SIM115 - the child writes it while we poll
    cmd = [sys.executable, "-m", "bitcpm.train", *overrides]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return Running(trial, run_dir, overrides, proc)


def val_losses(run_dir: Path) -> dict[int, float]:
    """step -> validation loss recorded so far (a later record of a step wins, as after a resume)."""
    return {int(r["step"]): r["val_loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "val_loss" in r}


def poll(r: Running) -> None:
    """Report new validation losses; SIGTERM the trial when Optuna prunes it."""
    for step, loss in sorted(val_losses(r.run_dir).items()):
        if step in r.reported or r.pruned:
            continue
        r.reported.add(step)
        r.trial.report(loss, step)
        if r.trial.should_prune():
            r.pruned = True
            r.proc.send_signal(signal.SIGTERM)


def finish(study, r: Running, rc: int, link) -> str:
    """Tell Optuna how the trial ended; returns its state name."""
    from optuna.trial import TrialState

    losses = val_losses(r.run_dir)
    if r.pruned and rc in (0, PREEMPTED):
        study.tell(r.trial, state=TrialState.PRUNED)
        state = "PRUNED"
    elif rc == 0 and losses:
        study.tell(r.trial, losses[max(losses)])
        state = "COMPLETE"
    else:
        study.tell(r.trial, state=TrialState.FAIL)
        state = "FAIL"
    link(r, state, losses)
    return state


def counted(study) -> int:
    """Trials that count toward the budget: finished ones, less those a killed driver left (asked again)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    retried = [t for t in study.get_trials(deepcopy=False) if "resumes_trial" in t.user_attrs]
    return len(done) - len(retried)
