"""The body of bitcpm's Hydra Launcher: a multirun batch becomes a study (plan all, then run all).

Hydra's sweeper writes its record (multirun.yaml in hydra.sweep.dir) before the launcher sees the batch;
when the study then stops on a bad member, the front end undoes that write (discard_unstarted), so a
rejected study leaves nothing behind.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

if TYPE_CHECKING:
    from bitcpm.frontend.compose import CommandLine
    from bitcpm.frontend.study import SweepContext

DEFAULT_STUDY = "multirun"


class TrialsFailed(RuntimeError):
    """Some trials of a study failed (already reported in the study's summary)."""


@dataclass
class _SweepDirState:
    created: Path | None = None
    """Topmost directory the sweep's record will create (removed again if nothing starts)."""
    record: Path | None = None
    previous: str | None = None
    """Content of an earlier multirun.yaml that this sweep overwrites."""
    started: bool = False
    results: list = field(default_factory=list)


_STATE = _SweepDirState()


def note_sweep_dir(config: DictConfig) -> None:
    """Remember what hydra.sweep.dir looks like before the sweeper writes into it."""
    global _STATE
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    created = None
    probe = sweep_dir
    while not probe.exists():
        created, probe = probe, probe.parent
    record = sweep_dir / "multirun.yaml"
    _STATE = _SweepDirState(created, record, record.read_text() if record.exists() else None)


def study_started() -> bool:
    """Whether a trial of the current study has been handed to a launcher."""
    return _STATE.started


def discard_unstarted() -> None:
    """Undo the sweeper's record when no trial started (the study was rejected while planning)."""
    if _STATE.started or _STATE.record is None:
        return
    if _STATE.created is not None:
        shutil.rmtree(_STATE.created, ignore_errors=True)
    elif _STATE.previous is not None:
        _STATE.record.write_text(_STATE.previous)
    else:
        _STATE.record.unlink(missing_ok=True)


def study_name(config: DictConfig) -> str:
    """The study's name: the chosen sweep config (sweep=NAME), else 'multirun'."""
    choice = config.hydra.runtime.choices.get("sweep")
    return str(choice) if choice else DEFAULT_STUDY


def command_line(config: DictConfig) -> CommandLine:
    """How the multirun was invoked (config name, hydra.* overrides), to compose its members the same way."""
    from bitcpm.frontend.compose import CommandLine

    return CommandLine(
        config_name=str(config.hydra.job.config_name),
        hydra_app=True,
        hydra_overrides=[str(o) for o in config.hydra.overrides.hydra],
    )


def launch_batch(
    config: DictConfig, batch: list[list[str]], initial_job_idx: int, sweep: SweepContext | None = None
) -> list[JobReturn]:
    """Plan every member of the batch (ConfigError stops here), then run the study; a JobReturn per member.

    `sweep` is set when the batch is one of several of an adaptive study (bitcpm's Optuna sweeper).
    """
    from bitcpm.config.validate import ConfigError
    from bitcpm.frontend.launch import memory_refusal, print_plans
    from bitcpm.frontend.study import plan_study, run_study

    name = sweep.name if sweep is not None else study_name(config)
    study = plan_study(command_line(config), batch, name, sweep)
    if sweep is None or not sweep.results:  # an adaptive study's later batches differ only in their values
        print_plans(study.members)
    if all(m.job.dry_run for m in study.members):
        jobs = sum(len(m.stages) for m in study.members)
        print(f"bitcpm: study {name}: {len(study.members)} member(s), {jobs} job(s) planned; dry run, nothing started")
        return [_job_return(o, JobStatus.COMPLETED, None) for o in batch]
    refusal = memory_refusal(study.members)
    if refusal is not None:  # nothing of the study starts when one member cannot fit
        raise ConfigError(refusal)
    _STATE.started = True
    results = run_study(study)
    failed = [r for r in results if r.failed]
    error = TrialsFailed(f"{len(failed)} of {len(results)} trials failed: " + "; ".join(r.member.label for r in failed))
    return [
        _job_return(r.member.overrides, JobStatus.FAILED, error)
        if r.failed
        else _job_return(r.member.overrides, JobStatus.COMPLETED, r.losses)
        for r in results
    ]


def _job_return(overrides: list[str], status: JobStatus, value: object) -> JobReturn:
    # The sweeper reads return_value: the trial's validation losses (final and best, what a sweeper minimises).
    ret = JobReturn(overrides=list(overrides), status=status)
    ret._return_value = value
    return ret
