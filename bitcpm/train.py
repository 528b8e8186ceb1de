"""`python -m bitcpm.train key=value ...`: compose -> validate -> plan -> launch.

This front end never imports torch or megatron: it composes and checks the config, prints the plan,
writes the run directory and hands the job to a launcher, which starts `bitcpm.worker` on every rank.
Hydra's own flags (--cfg job --resolve, --help, --info, -m, --config-dir) keep working.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bitcpm.config.root import JobConfig
from bitcpm.frontend.compose import CommandLine, compose_job, expand_sweeps, one_line_error, parse_command_line

WORKER_MODULE = "bitcpm.worker"


def error_exit(message: str) -> int:
    """Print a one-line error and return the exit code for a bad configuration."""
    print(f"bitcpm: error: {message}", file=sys.stderr)
    return 2


def prepare_run_dir(job: JobConfig, overrides: list[str]) -> Path:
    """Create the run directory and write the resolved config and the overrides that made it."""
    from bitcpm.config.load import job_to_yaml
    from bitcpm.frontend.rundir import run_dir_for

    run_dir = run_dir_for(job)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = job_to_yaml(job)
    existing = run_dir / "config.yaml"
    if existing.exists() and existing.read_text() != config:
        # Same math hash but other settings (cadence, tracking, launcher): keep the newest for the record.
        existing.replace(run_dir / "config.previous.yaml")
    existing.write_text(config)
    (run_dir / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides) or "[]\n")
    return run_dir


def launch_job(job: JobConfig, overrides: list[str]) -> int:
    """Print the plan, then (unless dry_run) start the workers through the configured launcher."""
    return launch_jobs([(job, overrides)])


def launch_jobs(members: list[tuple[JobConfig, list[str]]]) -> int:
    """Plan every job, then start them: several jobs of one launcher go out together (a Slurm array)."""
    from bitcpm.frontend.submission import launch_refusal, plan_text, request_for

    for job, _ in members:
        print(plan_text(job), flush=True)
    live = [(job, overrides) for job, overrides in members if not job.dry_run]
    if not live:
        return 0
    refusals = [reason for job, _ in live if (reason := launch_refusal(job))]
    if refusals:  # nothing of a sweep starts when one member cannot fit
        return error_exit(refusals[0])
    from launchers import launch_all

    by_launcher: dict[str, list] = {}
    for job, overrides in live:
        request = request_for(job, prepare_run_dir(job, overrides), WORKER_MODULE)
        by_launcher.setdefault(job.launcher.name, []).append(request)
    return max(launch_all(name, requests) for name, requests in by_launcher.items())


def _hydra_main(cmd: CommandLine) -> int:
    """Hand the command line to Hydra (printing configs, help, or expanding a multirun sweep)."""
    import hydra
    from omegaconf import DictConfig

    from bitcpm.config.store import register_schema
    from bitcpm.presets import conf_dir

    register_schema()
    members: list[tuple[JobConfig, list[str]]] = []

    @hydra.main(config_path=str(conf_dir()), config_name=cmd.config_name, version_base=None)
    def task(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from bitcpm.config.load import to_job

        # Hydra only expands the sweep; every member is launched afterwards, together.
        members.append((to_job(cfg), list(HydraConfig.get().overrides.task)))

    task()
    return launch_jobs(members)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bitcpm.train` and the `bitcpm-train` script."""
    args = sys.argv[1:] if argv is None else argv
    cmd = parse_command_line(args)
    try:
        combos = expand_sweeps(cmd.overrides) if cmd.multirun else [cmd.overrides]
        # Printing a config (--cfg) only needs it to compose; launching needs every rule to hold.
        jobs = [compose_job(cmd, combo, check_rules=not cmd.hydra_only) for combo in combos]
    except Exception as exc:  # composition errors of every kind become one line, no traceback
        return error_exit(one_line_error(exc))
    if cmd.hydra_only or cmd.multirun:
        sys.argv = [sys.argv[0], *args]
        return _hydra_main(cmd)
    if jobs[0].pipeline:
        return _pipeline(cmd, jobs[0])
    return launch_job(jobs[0], cmd.overrides)


def _pipeline(cmd: CommandLine, base: JobConfig) -> int:
    """Compose and validate every stage, then run them in order and summarise."""
    from bitcpm.frontend.pipeline import plan_pipeline, run_pipeline
    from bitcpm.frontend.pipeline_report import print_summary
    from bitcpm.frontend.submission import on_slurm

    try:
        stages = plan_pipeline(cmd, base)
    except Exception as exc:
        return error_exit(one_line_error(exc))
    if not base.dry_run and all(on_slurm(stage.job) for stage in stages):
        code = _submit_chain(stages)  # Slurm holds each stage until the previous one succeeded (afterok)
        return code
    code = run_pipeline(stages, launch_job)
    if code == 0 and not base.dry_run:
        print_summary(stages)
    return code


def _submit_chain(stages) -> int:
    """Submit every pipeline stage now, as Slurm jobs chained by afterok dependencies."""
    from bitcpm.frontend.submission import launch_refusal, plan_text, request_for
    from launchers.slurm import launch_chain

    requests = []
    for stage in stages:
        print(plan_text(stage.job), flush=True)
        if reason := launch_refusal(stage.job):
            return error_exit(f"pipeline stage '{stage.name}': {reason}")
        requests.append(request_for(stage.job, prepare_run_dir(stage.job, stage.overrides), WORKER_MODULE))
    return launch_chain(requests)


if __name__ == "__main__":
    sys.exit(main())
