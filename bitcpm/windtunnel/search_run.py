"""The search driver's loop: keep up to N trials running, poll, tell Optuna, nest the runs in MLflow."""

from __future__ import annotations

import os
import signal
import time

from bitcpm.windtunnel.search import (
    POLL_S,
    Running,
    SearchArgs,
    counted,
    default_storage,
    finish,
    open_study,
    plan_trial,
    poll,
    start,
)
from bitcpm.windtunnel.space import grid_points

ADOPT_EVERY = 10  # polls between MLflow look-ups for a running trial's run


class MlflowLink:
    """The study's parent run and the tags that make each trial's training run its child."""

    def __init__(self, job, args: SearchArgs, storage: str) -> None:
        self.job, self.study = job, args.study
        self.client = self.parent = None
        if job.tracking.backend != "mlflow":
            return
        from bitcpm.tracking.client import open_client, restart_run
        from bitcpm.windtunnel.tracking import experiment_name, open_study_run, store_uri

        self.client = open_client(store_uri(job.tracking))
        space = {
            p.key: list(p.choices) if p.choices else [p.low, p.high, "log" if p.log else "lin"] for p in args.params
        }
        params = {"space": space, "sampler": args.sampler, "overrides": " ".join(args.overrides), "storage": storage}
        self.parent = open_study_run(self.client, experiment_name(job.tracking), args.study, "search", params)
        restart_run(self.client, self.parent)  # a resumed study's parent runs again

    def close(self, status: str) -> None:
        """End the study's parent run."""
        if self.client is not None:
            from bitcpm.tracking.client import finish_run

            finish_run(self.client, self.parent, status)

    def _runs(self, r: Running) -> list:
        from bitcpm.tracking.client import find_runs
        from bitcpm.windtunnel.tracking import experiment_name

        return find_runs(self.client, experiment_name(self.job.tracking), {"run_dir": str(r.run_dir)})

    def adopt(self, r: Running) -> None:
        """Make a running trial's training run a child as soon as it exists (the UI nests it while it trains)."""
        if self.client is None or r.linked:
            return
        from bitcpm.tracking.client import child_of, set_tags
        from bitcpm.windtunnel.tracking import STUDY_TAG

        for run in self._runs(r):
            tags = {**child_of(self.parent), STUDY_TAG: self.study, "optuna.trial": str(r.trial.number)}
            tags["bitcpm.overrides"] = " ".join(r.overrides)
            set_tags(self.client, run.info.run_id, tags)
            r.linked = True

    def __call__(self, r: Running, state: str, losses: dict[int, float]) -> None:
        """Tag the trial's training run (found by its run directory) as a child, with how it ended."""
        if self.client is None:
            return
        from bitcpm.tracking.client import log_metrics, set_tags

        r.linked = False
        self.adopt(r)
        for run in self._runs(r):
            rid = run.info.run_id
            set_tags(self.client, rid, {"optuna.state": state})
            if losses:
                ends = {"best_val_loss": min(losses.values()), "final_val_loss": losses[max(losses)]}
                log_metrics(self.client, rid, ends)


def run_search(args: SearchArgs) -> int:
    """Run the study until `trials` trials have finished; 0 when at least one completed."""
    from bitcpm.frontend.compose import CommandLine, compose_job

    job = compose_job(CommandLine(), args.overrides)  # a bad fixed override stops here, before any trial
    if args.sampler == "grid":
        from bitcpm.windtunnel.space import trial_overrides

        for point in grid_points(args.params):  # every member validated before the first starts
            compose_job(CommandLine(), [*args.overrides, *trial_overrides(point, job.model)])
    total = args.trials if args.trials is not None else len(grid_points(args.params))
    storage = args.storage or default_storage(job)
    study = open_study(args, storage)
    link = MlflowLink(job, args, storage)
    already = counted(study)
    print(f"search {args.study}: {already} of {total} trials already finished (storage {storage})", flush=True)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    running: list[Running] = []
    launched = rounds = 0
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        for r in running:
            r.proc.send_signal(signal.SIGTERM)  # they save; a restarted driver resumes them

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            while stop["signal"] is None and len(running) < args.parallel and counted(study) + len(running) < total:
                trial, overrides, run_dir = plan_trial(args, study, job.model)
                print(f"search {args.study}: trial {trial.number} {trial.params} -> {run_dir}", flush=True)
                running.append(start(trial, overrides, run_dir, threads))
                launched += 1
            if not running:
                break
            time.sleep(POLL_S)
            rounds += 1
            for r in list(running):
                poll(r)
                if rounds % ADOPT_EVERY == 0:
                    link.adopt(r)
                rc = r.proc.poll()
                if rc is None:
                    continue
                running.remove(r)
                if stop["signal"] is not None:
                    continue  # left RUNNING in the study: the next driver asks it again and resumes it
                state = finish(study, r, rc, link)
                print(f"search {args.study}: trial {r.trial.number} {state} (exit {rc})", flush=True)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if stop["signal"] is not None:
        link.close("KILLED")
        print(f"search {args.study}: stopped by signal {stop['signal']}; rerun the command to resume", flush=True)
        return 75
    code = _summary(study, args.study, launched, link)
    link.close("FINISHED" if code == 0 else "FAILED")
    return code


def _summary(study, name: str, launched: int, link: MlflowLink) -> int:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    print(f"search {name}: launched {launched} trial(s) this time; {len(done)} complete in the study")
    if not done:
        return 1
    best = study.best_trial
    print(f"search {name}: best trial {best.number}: val_loss {best.value:.4f} at {best.params}")
    if link.client is not None:
        from bitcpm.tracking.client import log_metrics, set_tags

        set_tags(link.client, link.parent, {f"best.{key}": value for key, value in best.params.items()})
        log_metrics(link.client, link.parent, {"best_val_loss": best.value, "trials_complete": len(done)})
    return 0
