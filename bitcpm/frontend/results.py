"""What each trial of a study achieved, read back from its run directory's metrics.jsonl (no MLflow needed)."""

from __future__ import annotations

from dataclasses import dataclass

from bitcpm.frontend.members import Member
from bitcpm.training.finished_marker import FINISHED_MARKER
from bitcpm.training.metrics_log import metric_series


@dataclass(frozen=True)
class Losses:
    """Validation losses of a run: the last one logged and the lowest."""

    final: float | None = None
    best: float | None = None


@dataclass
class TrialResult:
    """How a study member ended."""

    member: Member
    status: str
    """'finished', 'failed', 'stopped' (saved on a signal, resumable), 'pruned' (stopped by its study on purpose),
    'skipped' (finished earlier) or 'submitted' (Slurm, not waited for)."""
    code: int = 0
    """Exit code of the member's launch (0 for skipped and submitted)."""
    losses: Losses = Losses()

    @property
    def failed(self) -> bool:
        """Whether the member did not finish when it should have (a pruned trial was meant to stop)."""
        return self.status in ("failed", "stopped")


def member_losses(member: Member) -> Losses:
    """Final and best validation loss of the member's last stage."""
    series = metric_series(member.last_run_dir / "metrics.jsonl", "val_loss")
    if not series:
        return Losses()
    return Losses(final=series[max(series)], best=min(series.values()))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def best_result(results: list[TrialResult]) -> TrialResult | None:
    """The trial with the lowest best validation loss."""
    scored = [r for r in results if r.losses.best is not None and not r.failed]
    return min(scored, key=lambda r: r.losses.best or 0.0) if scored else None


def study_table(name: str, results: list[TrialResult]) -> str:
    """Markdown summary of a study: one row per trial, best first marked."""
    best = best_result(results)
    lines = [
        f"# Study {name}: {len(results)} trials, {sum(r.failed for r in results)} failed",
        "",
        "| # | status | final val loss | best val loss | overrides | run directory |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        mark = " **best**" if best is r else ""
        lines.append(
            f"| {r.member.index + 1} | {r.status}{mark} | {_fmt(r.losses.final)} | {_fmt(r.losses.best)} "
            f"| `{r.member.label}` | {r.member.last_run_dir} |"
        )
    return "\n".join(lines) + "\n"


def stage_table(member: Member) -> str:
    """Markdown summary of a recipe's stages."""
    lines = ["| stage | final val loss | best val loss | run directory |", "|---|---|---|---|"]
    for stage in member.stages:
        series = metric_series(stage.run_dir / "metrics.jsonl", "val_loss")
        final = series[max(series)] if series else None
        best = min(series.values()) if series else None
        lines.append(f"| {stage.name} | {_fmt(final)} | {_fmt(best)} | {stage.run_dir} |")
    return "\n".join(lines) + "\n"


def print_study_summary(name: str, results: list[TrialResult]) -> None:
    """The study's outcome on the terminal: a table, then every failure with where to look."""
    print(f"bitcpm: study {name} summary (validation loss)")
    print(f"  {'#':>3} {'status':<9} {'final':>8} {'best':>8}   overrides")
    for r in results:
        final, best = _fmt(r.losses.final), _fmt(r.losses.best)
        print(f"  {r.member.index + 1:>3} {r.status:<9} {final:>8} {best:>8}   {r.member.short_label}")
    failed = [r for r in results if r.failed]
    for r in failed:
        stopped = next((s.run_dir for s in r.member.stages if not (s.run_dir / FINISHED_MARKER).exists()), None)
        log = (stopped or r.member.last_run_dir) / "launch" / "worker.log"
        where = f"; log {log}" if log.exists() else ""
        print(f"bitcpm: trial {r.member.index + 1} failed (exit {r.code}): {r.member.short_label}{where}", flush=True)
