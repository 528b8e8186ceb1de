"""A study: the whole batch of a Hydra multirun, planned in full before its first trial starts.

Order: compose + validate + plan every member (a bad member stops the study here, nothing written), skip
members that finished earlier, open the MLflow parent run, write the run directories, then run the trials:
launcher=local up to launcher.max_parallel at once, Slurm as one array throttled to launcher.max_parallel,
recipes as pipelines. A failed trial is reported and the others go on; the study fails at the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from bitcpm.frontend import study_tracking as st
from bitcpm.frontend.compose import CommandLine
from bitcpm.frontend.members import Member, plan_members, search_space
from bitcpm.frontend.results import Losses, TrialResult, best_result, member_losses, print_study_summary, study_table


@dataclass
class Study:
    """A named batch of members and its identity across re-runs."""

    name: str
    members: list[Member]
    search_space: dict[str, list[str]] = field(default_factory=dict)
    parent_id: str | None = None

    @property
    def study_id(self) -> str:
        """Same members, same id: a re-run continues the same parent run."""
        blob = "\n".join([self.name, *sorted(str(m.last_run_dir) for m in self.members)])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan_study(cmd: CommandLine, batch: list[list[str]], name: str) -> Study:
    """Every member composed, validated and planned (ConfigError names the first bad member and key)."""
    return Study(name, plan_members(cmd, batch), search_space(batch))


def _open_study_run(study: Study) -> None:
    tracking = study.members[0].job.tracking
    if not st.tracked(tracking):
        return
    params = {f"space.{k}": ",".join(v) for k, v in study.search_space.items()}
    params["trials"] = str(len(study.members))
    tags = {st.STUDY_TAG: study.name, "stage": "study"}
    try:
        study.parent_id = st.open_parent(
            tracking,
            run_name=f"study-{study.name}",
            id_tag=st.STUDY_ID_TAG,
            id_value=study.study_id,
            params=params,
            tags=tags,
        )
    except Exception as exc:  # no server: the trials still run, unnested
        from bitcpm.frontend.tree import _warn

        _warn("study run", exc)


def _tag_trials(study: Study, members: list[Member]) -> dict[int, str | None]:
    """Parent tags on every job to run; recipe members get a pipeline run between the study and stages."""
    from bitcpm.frontend.tree import open_pipeline_run, set_parent

    pipeline_runs: dict[int, str | None] = {}
    for m in members:
        trial_tags = {st.STUDY_TAG: study.name, st.TRIAL_TAG: str(m.index + 1), st.OVERRIDES_TAG: m.label}
        set_parent(m, None, trial_tags)
        for stage in m.stages:  # children named by what sets them apart (unless the user named them)
            if stage.job.tracking.run_name is None:
                name = f"{stage.name} {m.short_label}" if m.is_pipeline else m.short_label
                stage.job.tracking.run_name = name
        if m.is_pipeline:
            pipeline_runs[m.index] = open_pipeline_run(m, study.parent_id)
        else:
            set_parent(m, study.parent_id)
    return pipeline_runs


def run_study(study: Study) -> list[TrialResult]:
    """Run a planned study's trials (skipping finished ones) and summarise it; returns every trial's result."""
    from bitcpm.frontend.dispatch import run_members

    members = study.members
    done = [m for m in members if m.finished()]
    todo = [m for m in members if not m.finished()]
    for m in done:
        print(f"bitcpm: trial {m.index + 1}/{len(members)} finished earlier, skipped: {m.short_label}", flush=True)
    _open_study_run(study)
    pipeline_runs = _tag_trials(study, todo)
    codes = run_members(todo, len(members))
    results = {m.index: TrialResult(m, "skipped", 0, member_losses(m)) for m in done}
    for m in todo:
        code = codes[m.index]
        status = "submitted" if code is None else ("finished" if code == 0 else "failed")
        results[m.index] = TrialResult(m, status, code or 0, member_losses(m))
    ordered = [results[m.index] for m in members]
    _record(study, ordered, pipeline_runs)
    print_study_summary(study.name, ordered)
    return ordered


def _record(study: Study, results: list[TrialResult], pipeline_runs: dict[int, str | None]) -> None:
    """Each trial's overrides and losses on its run; the summary on the study run."""
    if study.parent_id is None:
        return
    from bitcpm.frontend.tree import _warn, close_pipeline_run

    tracking = study.members[0].job.tracking
    try:
        for r in results:
            m = r.member
            if m.is_pipeline:
                close_pipeline_run(m, pipeline_runs.get(m.index), r.failed)
                run_id = pipeline_runs.get(m.index)
            else:
                run_id = st.child_run_id(tracking, study.parent_id, m.last_run_dir.name.rsplit("-", 1)[-1])
            if r.status == "skipped" and run_id is not None:
                continue  # recorded when it ran
            st.record_trial(
                tracking,
                run_id,
                parent_id=study.parent_id,
                run_name=f"{study.name}-trial-{m.index + 1}",
                tags={st.STUDY_TAG: study.name, st.TRIAL_TAG: str(m.index + 1), st.OVERRIDES_TAG: m.label},
                params={f"override.{k}": v for k, _, v in (o.partition("=") for o in m.overrides)},
                metrics={"final_val_loss": r.losses.final, "best_val_loss": r.losses.best},
                failed=r.failed,
            )
        best = best_result(results)
        metrics = {
            "best_val_loss": best.losses.best if best else None,
            "trials_failed": float(sum(r.failed for r in results)),
            "trials": float(len(results)),
        }
        st.close_parent(
            tracking,
            study.parent_id,
            summary_md=study_table(study.name, results),
            metrics=metrics,
            failed=any(r.failed for r in results),
        )
    except Exception as exc:
        _warn("study summary", exc)


__all__ = ["Losses", "Study", "plan_study", "run_study", "search_space"]
