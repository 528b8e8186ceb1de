"""End-of-pipeline summary from each stage's metrics.jsonl."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bitcpm.training.metrics_log import metric_series

if TYPE_CHECKING:
    from bitcpm.frontend.pipeline import PipelineStage


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def stage_losses(stage: PipelineStage) -> dict[str, float | None]:
    """Step-0 and final validation loss of a stage, and a fresh model's loss when it was initialised."""
    path = stage.run_dir / "metrics.jsonl"
    val = metric_series(path, "val_loss")
    fresh = metric_series(path, "val_loss_fresh_init")
    return {
        "start": val.get(0),
        "final": val[max(val)] if val else None,
        "fresh_init": fresh.get(0),
    }


def print_summary(stages: list[PipelineStage]) -> None:
    """One line per stage: validation loss at step 0 and at the end, and a fresh model's step-0 loss."""
    print("bitcpm: pipeline summary (validation loss)")
    print(f"  {'stage':<12} {'step 0':>8} {'final':>8} {'fresh init':>11}   run directory")
    for stage in stages:
        losses = stage_losses(stage)
        print(
            f"  {stage.name:<12} {_fmt(losses['start']):>8} {_fmt(losses['final']):>8} "
            f"{_fmt(losses['fresh_init']):>11}   {stage.run_dir}"
        )
