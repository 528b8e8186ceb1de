"""The length of a stage in optimizer steps, torch-free: train.steps, stage.tokens, or stage.tokens=auto
(QAT: twice the decay-phase tokens of the source run, read from the source run's saved config.yaml).

The plan prints it and the validation rules check the re-warmup against it before anything is launched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from bitcpm.config.checkpoints import complete_checkpoint
from bitcpm.config.derived import tokens_per_step
from bitcpm.config.errors import ConfigError, parse_tokens
from bitcpm.config.root import JobConfig


@dataclass(frozen=True)
class StageLength:
    """Optimizer steps of a stage and where the number comes from."""

    steps: int
    """Steps the stage trains for (train.steps where the source run cannot be read yet)."""
    known: bool
    """False when stage.tokens=auto names a source run that does not exist yet (a later pipeline stage)."""
    origin: str
    """How the length was derived, for the plan."""


def source_config_path(init_from: str) -> Path | None:
    """config.yaml of the run whose complete checkpoint stage.init_from names (None: no complete one yet)."""
    checkpoint = complete_checkpoint(Path(init_from))
    config = None if checkpoint is None else checkpoint.parent.parent / "config.yaml"
    return config if config is not None and config.is_file() else None


def decay_tokens_of(config: Path) -> int:
    """Tokens a finished run spent in its lr decay phase, from its resolved config.yaml."""
    try:
        src = OmegaConf.load(config)
        per_step = int(src.parallel.global_batch_size) * int(src.train.seq_length)
        tokens = parse_tokens(src.stage.get("tokens"))
        steps = int(src.train.steps) if not isinstance(tokens, int) else max(1, math.ceil(tokens / per_step))
        decay_fraction = float(src.optim.decay_fraction)
    except Exception as exc:  # a foreign or damaged file: one line naming the key, not a traceback
        raise ConfigError(f"stage.tokens=auto: cannot read the source run's {config} ({exc})") from None
    return math.floor(decay_fraction * steps) * per_step


def stage_length(cfg: JobConfig) -> StageLength:
    """Steps of this stage: from stage.tokens when given ('auto': 2x the source's decay tokens), else train.steps."""
    tokens = parse_tokens(cfg.stage.tokens)
    per_step = tokens_per_step(cfg)
    if tokens is None:
        return StageLength(cfg.train.steps, True, "train.steps")
    if tokens == "auto":
        config = source_config_path(cfg.stage.init_from) if cfg.stage.init_from else None
        if config is None:
            source = cfg.stage.init_from or "stage.init_from (not set)"
            origin = f"stage.tokens=auto: 2x the decay tokens of {source} (read when it exists)"
            return StageLength(cfg.train.steps, False, origin)
        # BitCPM4: QAT trains on twice the tokens of the full-precision run's decay phase.
        decay = decay_tokens_of(config)
        tokens = 2 * decay
        origin = f"stage.tokens=auto: 2 x {decay:,} decay tokens of the source run"
    else:
        origin = f"stage.tokens={tokens:,}"
    return StageLength(max(1, math.ceil(int(tokens) / per_step)), True, origin)
