"""The members of a run or a study: every one composed, validated and planned before any of them starts.

A member is one job of a Hydra multirun (or the single job of a plain run). A member whose config is a
pipeline recipe (experiment=debug_pipeline) is expanded into its stages here, so a study of recipes checks
every stage of every member up front and later runs each member as one pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from bitcpm.config.root import JobConfig
from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import CommandLine, compose_job, one_line_error
from bitcpm.frontend.pipeline import PipelineStage, plan_pipeline
from bitcpm.frontend.rundir import run_dir_for
from bitcpm.training.finished_marker import FINISHED_MARKER


@dataclass
class Member:
    """One job of a batch, composed and validated."""

    index: int
    """Position in the batch (0-based)."""
    overrides: list[str]
    """The job's overrides as Hydra handed them over (sweep values and fixed overrides)."""
    job: JobConfig
    """The composed job (for a recipe: the base job whose `pipeline` lists the stages)."""
    stages: list[PipelineStage]
    """What runs, in order: a recipe's stages, or the job itself as the only stage."""
    swept: list[str] = field(default_factory=list)
    """The overrides that differ between the study's members (set by the study; empty for a plain run)."""

    @property
    def is_pipeline(self) -> bool:
        """Whether the member is a pipeline recipe."""
        return bool(self.job.pipeline)

    @property
    def label(self) -> str:
        """The overrides that make this member (MLflow's bitcpm.overrides tag)."""
        return " ".join(self.overrides) or "(defaults)"

    @property
    def short_label(self) -> str:
        """What tells this member apart from the others of its study (for progress lines and summaries)."""
        return " ".join(self.swept) or self.label

    @property
    def last_run_dir(self) -> Path:
        """Run directory of the last stage (the member's result)."""
        return self.stages[-1].run_dir

    def finished(self) -> bool:
        """Every stage's worker already ended successfully (re-running it would do nothing)."""
        return all((stage.run_dir / FINISHED_MARKER).exists() for stage in self.stages)


def plan_member(cmd: CommandLine, index: int, overrides: list[str]) -> Member:
    """Compose and validate one member, expanding a recipe into its stages."""
    member_cmd = replace(cmd, overrides=list(overrides))
    job = compose_job(member_cmd, list(overrides))
    if job.pipeline:
        stages = plan_pipeline(member_cmd, job)
    else:
        stages = [PipelineStage(job.stage.name, job, list(overrides), run_dir_for(job))]
    return Member(index, list(overrides), job, stages)


def search_space(batch: list[list[str]]) -> dict[str, list[str]]:
    """The keys whose values differ between members, with their values in order of appearance."""
    values: dict[str, list[str]] = {}
    for overrides in batch:
        for item in overrides:
            key, _, value = item.partition("=")
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return {k: v for k, v in values.items() if len(v) > 1}


def plan_members(cmd: CommandLine, batch: list[list[str]]) -> list[Member]:
    """Every member of the batch, or a one-line ConfigError naming the first bad member and key."""
    space = search_space(batch)
    members = []
    for index, overrides in enumerate(batch):
        swept = [o for o in overrides if o.partition("=")[0] in space]
        try:
            member = plan_member(cmd, index, list(overrides))
        except Exception as exc:  # composition errors of every kind become one line
            message = one_line_error(exc)
            if len(batch) > 1:
                label = " ".join(swept or overrides) or "(defaults)"
                message = f"study member {index + 1}/{len(batch)} ({label}): {message}"
            raise ConfigError(message) from None
        member.swept = swept
        members.append(member)
    return members
