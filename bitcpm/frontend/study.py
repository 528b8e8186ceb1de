"""A study: the whole batch of a Hydra multirun, planned in full before its first trial starts.

Order: compose + validate + plan every member (a bad member stops the study here, nothing written), skip
members that finished earlier, open the MLflow parent run, write the run directories, then run the trials:
launcher=local up to launcher.max_parallel at once, Slurm as one array throttled to launcher.max_parallel,
recipes as pipelines. A failed trial is reported and the others go on; the study fails at the end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bitcpm.frontend import study_tracking as st
from bitcpm.frontend.compose import CommandLine
from bitcpm.frontend.members import Member, plan_members, search_space
from bitcpm.frontend.results import Losses, TrialResult, best_result, member_losses, print_study_summary, study_table
from bitcpm.training.signals import EXIT_PREEMPTED


class TrialWatch(Protocol):
    """Looks at local trials while they run, and may stop them (an adaptive study's pruner)."""

    def should_stop(self, index: int, run_dir: Path) -> bool:
        """Whether trial `index`, now running in `run_dir`, should stop (it saves and exits 75)."""
        ...

    def stopped(self, index: int) -> bool:
        """Whether this watch stopped trial `index` (pruned on purpose, not failed)."""
        ...


@dataclass
class SweepContext:
    """An adaptive sweeper's study that reaches the launcher in several batches: one parent run for all."""

    name: str
    """The study's name (MLflow's bitcpm.study tag on its parent run)."""
    study_id: str
    """Identity of the whole study across batches and re-runs (finds its parent run again)."""
    total: int
    """Trials the whole study runs (for progress lines)."""
    params: dict[str, str] = field(default_factory=dict)
    """Logged on the parent run (the search space, sampler, storage)."""
    searched: list[str] = field(default_factory=list)
    """The keys the study searches (what tells its trials apart)."""
    indices: list[int] = field(default_factory=list)
    """Trial numbers of the batch being handed over, one per member."""
    watch: TrialWatch | None = None
    results: list[TrialResult] = field(default_factory=list)
    """Every batch's results so far (for the closing summary)."""
    parent_id: str | None = None


@dataclass
class Study:
    """A named batch of members and its identity across re-runs."""

    name: str
    members: list[Member]
    search_space: dict[str, list[str]] = field(default_factory=dict)
    parent_id: str | None = None
    sweep: SweepContext | None = None
    """Set when the batch is one of several of an adaptive study."""

    @property
    def study_id(self) -> str:
        """Same members, same id: a re-run continues the same parent run."""
        if self.sweep is not None:
            return self.sweep.study_id
        blob = "\n".join([self.name, *sorted(str(m.last_run_dir) for m in self.members)])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan_study(cmd: CommandLine, batch: list[list[str]], name: str, sweep: SweepContext | None = None) -> Study:
    """Every member composed, validated and planned (ConfigError names the first bad member and key)."""
    members = plan_members(cmd, batch)
    if sweep is not None:
        for member, index in zip(members, sweep.indices, strict=True):
            member.index = index
            member.swept = [o for o in member.overrides if o.partition("=")[0] in sweep.searched]
    return Study(name, members, search_space(batch), sweep=sweep)


def _open_study_run(study: Study) -> None:
    tracking = study.members[0].job.tracking
    if not st.tracked(tracking):
        return
    if study.sweep is not None and study.sweep.parent_id is not None:
        study.parent_id = study.sweep.parent_id
        return
    if study.sweep is not None:
        params = dict(study.sweep.params)
    else:
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
    if study.sweep is not None:
        study.sweep.parent_id = study.parent_id


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
    sweep = study.sweep
    total = sweep.total if sweep is not None else len(members)
    done = [m for m in members if m.finished()]
    todo = [m for m in members if not m.finished()]
    for m in done:
        print(f"bitcpm: trial {m.index + 1}/{total} finished earlier, skipped: {m.short_label}", flush=True)
    _open_study_run(study)
    pipeline_runs = _tag_trials(study, todo)
    watch = sweep.watch if sweep is not None else None
    codes = run_members(todo, total, watch.should_stop if watch is not None else None)
    results = {m.index: TrialResult(m, "skipped", 0, member_losses(m)) for m in done}
    for m in todo:
        code = codes[m.index]
        results[m.index] = TrialResult(m, _status(code, m.index, watch), code or 0, member_losses(m))
    ordered = [results[m.index] for m in members]
    _record(study, ordered, pipeline_runs)
    print_study_summary(study.name, ordered)
    if sweep is not None:
        sweep.results.extend(ordered)
    return ordered


def _status(code: int | None, index: int, watch: TrialWatch | None) -> str:
    if code is None:
        return "submitted"
    if code == 0:
        return "finished"
    if code == EXIT_PREEMPTED:
        return "pruned" if watch is not None and watch.stopped(index) else "stopped"
    return "failed"


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
                if run_id is None and r.status == "skipped":  # recorded when this study ran it before
                    run_id = st.trial_run_id(tracking, study.parent_id, m.index + 1)
            else:
                config_hash = m.last_run_dir.name.rsplit("-", 1)[-1]
                run_id = st.child_run_id(tracking, study.parent_id, config_hash)
                if run_id is None and r.status == "skipped":  # it ran under an earlier study: move it here
                    tags = {st.STUDY_TAG: study.name, st.TRIAL_TAG: str(m.index + 1)}
                    run_id = st.adopt_run(tracking, study.parent_id, config_hash, tags)
            if r.status == "skipped" and run_id is not None:
                continue  # its losses and overrides were recorded when it ran
            st.record_trial(
                tracking,
                run_id,
                parent_id=study.parent_id,
                run_name=f"{study.name}-trial-{m.index + 1}",
                tags={st.STUDY_TAG: study.name, st.TRIAL_TAG: str(m.index + 1), st.OVERRIDES_TAG: m.label},
                params={f"override.{k}": v for k, _, v in (o.partition("=") for o in m.overrides)},
                metrics={"final_val_loss": r.losses.final, "best_val_loss": r.losses.best},
                failed=r.failed,
                status=r.status,
            )
        if study.sweep is None:  # an adaptive study's parent stays open for its next batch
            _close_parent(study.name, tracking, study.parent_id, results)
    except Exception as exc:
        _warn("study summary", exc)


def _close_parent(name: str, tracking, parent_id: str, results: list[TrialResult], extra: dict | None = None) -> None:
    best = best_result(results)
    metrics = {
        "best_val_loss": best.losses.best if best else None,
        "trials_failed": float(sum(r.failed for r in results)),
        "trials": float(len(results)),
        **(extra or {}),
    }
    failed = any(r.failed for r in results)
    st.close_parent(tracking, parent_id, summary_md=study_table(name, results), metrics=metrics, failed=failed)


def close_sweep(sweep: SweepContext, metrics: dict[str, float | None], tags: dict[str, str]) -> None:
    """End an adaptive study's parent run: every batch's trials in its summary, the sweeper's own metrics/tags."""
    if sweep.parent_id is None or not sweep.results:
        return
    from bitcpm.frontend.tree import _warn

    tracking = sweep.results[0].member.job.tracking
    try:
        st.tag_run(tracking, sweep.parent_id, tags)
        _close_parent(sweep.name, tracking, sweep.parent_id, sweep.results, metrics)
    except Exception as exc:
        _warn("study summary", exc)


__all__ = ["Losses", "Study", "SweepContext", "TrialWatch", "close_sweep", "plan_study", "run_study", "search_space"]
