"""Launching planned jobs: write the run directory, hand the request to the job's launcher; plain runs and recipes.

A plain run (no -m) is one member: its job, or its recipe's stages in order (submitted at once as a chain when
every stage goes to one launcher that chains, e.g. Slurm with afterok). A recipe gets an MLflow run of its own
whose children are the stages. Launchers are reached through the job's launcher schema and chosen by their
capabilities, never by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bitcpm.config.root import JobConfig
from bitcpm.frontend.members import Member
from bitcpm.frontend.pipeline import PipelineStage

WORKER_MODULE = "bitcpm.worker"


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


def common_launcher(jobs: list[JobConfig]) -> Any | None:
    """The launcher every job goes to, or None when they go to different ones."""
    launchers = [job.launcher.implementation() for job in jobs]
    return launchers[0] if all(launcher is launchers[0] for launcher in launchers) else None


def stages_wait(stages: list[PipelineStage]) -> bool:
    """Whether launching these stages returns their outcome (else they are only submitted)."""
    return all(stage.job.launcher.capabilities().waits for stage in stages)


def launch_job(job: JobConfig, overrides: list[str]) -> int:
    """Start one planned job through its launcher (dry runs start nothing)."""
    if job.dry_run:
        return 0
    from bitcpm.frontend.submission import request_for

    request = request_for(job, prepare_run_dir(job, overrides), WORKER_MODULE)
    return int(job.launcher.implementation().launch(request))


def print_plans(members: list[Member]) -> None:
    """Every job's plan (what dry_run=true shows), member by member and stage by stage."""
    from bitcpm.frontend.submission import plan_text

    for member in members:
        for i, stage in enumerate(member.stages, 1):
            if len(members) > 1 or member.is_pipeline:
                where = f"study member {member.index + 1}/{len(members)}" if len(members) > 1 else "pipeline"
                what = f", stage {i}/{len(member.stages)} '{stage.name}'" if member.is_pipeline else ""
                print(f"bitcpm: {where}{what}: {member.short_label}", flush=True)
            print(plan_text(stage.job), flush=True)


def memory_refusal(members: list[Member]) -> str | None:
    """Why these planned jobs must not start (a plan exceeds device memory), or None; dry runs never refuse."""
    from bitcpm.frontend.submission import launch_refusal

    for member in members:
        if member.job.dry_run:
            continue
        for stage in member.stages:
            reason = launch_refusal(stage.job)
            if reason is not None:
                return f"pipeline stage '{stage.name}': {reason}" if member.is_pipeline else reason
    return None


def run_single(member: Member) -> int:
    """A plain run: its one job, or its recipe's stages (the plan is already printed)."""
    if member.job.dry_run:
        return 0
    if not member.is_pipeline:
        return launch_job(member.job, member.overrides)
    return run_recipe(member)


def run_recipe(member: Member, study_parent: str | None = None) -> int:
    """Run a recipe's stages in order under one MLflow pipeline run (a child of the study's run, if any)."""
    from bitcpm.frontend.pipeline import run_pipeline
    from bitcpm.frontend.pipeline_report import print_summary
    from bitcpm.frontend.tree import close_pipeline_run, open_pipeline_run

    stages = member.stages
    pipeline_run = open_pipeline_run(member, study_parent)
    launcher = common_launcher([stage.job for stage in stages])
    if launcher is not None and stages[0].job.launcher.capabilities().chains:
        code = _submit_chain(launcher, member)  # e.g. Slurm holds each stage until the previous one succeeded
        if code != 0 or stages_wait(stages):  # else the chain is still running
            close_pipeline_run(member, pipeline_run, failed=code != 0)
        return code
    code = run_pipeline(stages, launch_job)
    if code == 0:
        print_summary(stages)
    close_pipeline_run(member, pipeline_run, failed=code != 0)
    return code


def _submit_chain(launcher: Any, member: Member) -> int:
    """Submit every pipeline stage now, each starting only after the previous one succeeded (launch_chain)."""
    from bitcpm.frontend.submission import request_for

    requests = [request_for(s.job, prepare_run_dir(s.job, s.overrides), WORKER_MODULE) for s in member.stages]
    return int(launcher.launch_chain(requests))
