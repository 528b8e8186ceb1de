"""Training stage: pretrain, QAT or distillation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StageConfig:
    """One stage of the pretrain -> qat -> distill pipeline."""

    name: str = "pretrain"
    """'pretrain' (full precision), 'qat' (ternary from a full-precision start) or 'distill'."""
    init_from: str | None = None
    """Checkpoint or run directory to start from (required by qat and distill)."""
    branch_step: int | None = None
    """Continue stage.init_from's run from its checkpoint at this step: weights, optimizer state, step and data
    position carry over and this run's own schedule takes over (a WSD decay branch). None: weights only, step 0."""
    init_step: int | None = None
    """Start from stage.init_from's checkpoint of this step, not its newest, and read the data on from where that run
    stood then (a QAT branch off a stable phase): weights only, the optimizer and the lr schedule start fresh."""
    lr: float | None = None
    """Base lr for this stage before muP per-tensor scaling; None keeps optim.lr."""
    rewarmup_steps: int = 0
    """Linear lr re-warmup at the start of the stage (BitCPM4 found it critical for QAT)."""
    tokens: str | None = None
    """Training tokens of the stage: an integer, 'auto' (qat: 2x the source run's decay tokens) or None."""
    teacher_from: str | None = None
    """distill: teacher checkpoint or run directory (frozen, full precision)."""
    teacher_model: str | None = None
    """distill: teacher model preset name, for planning memory before the checkpoint is read."""
    alpha: float = 0.5
    """distill: weight of the KL term; (1 - alpha) weights the cross-entropy."""
    temperature: float = 1.0
    """distill: softmax temperature T of the KL term (scaled by T^2)."""
