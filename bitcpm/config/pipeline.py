"""Multi-stage recipes: pretrain -> qat -> distill, each stage feeding the next."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PipelineStageConfig:
    """One stage of a pipeline: a name and the overrides that turn the base job into this stage."""

    name: str = "stage"
    """Label; later stages refer to this stage's run directory as @name (e.g. stage.init_from=@pretrain)."""
    overrides: list[str] = field(default_factory=list)
    """Hydra overrides applied on top of the command line for this stage."""
