"""The plan of a job: its counts, batch arithmetic and where every rank sits."""

from __future__ import annotations

from dataclasses import dataclass

from bitcpm.config.derived import (
    data_parallel_size,
    micro_batches_per_step,
    pipeline_bubble,
    procs_per_node,
    tokens_per_step,
    world_size,
)
from bitcpm.config.root import JobConfig
from bitcpm.config.stage_length import StageLength, stage_length
from bitcpm.plan.counts import ParamCounts, count_params, flops_per_token


@dataclass(frozen=True)
class RankPlacement:
    """Where one global rank sits in the parallel grid."""

    rank: int
    node: int
    local_rank: int
    tp: int
    cp: int
    dp: int
    pp: int


def rank_layout(cfg: JobConfig) -> list[RankPlacement]:
    """Megatron's default order: tp fastest, then cp, then dp, then pp."""
    p = cfg.parallel
    dp = data_parallel_size(cfg)
    per_node = procs_per_node(cfg)
    out = []
    for rank in range(world_size(cfg)):
        tp_r = rank % p.tp
        cp_r = (rank // p.tp) % p.cp
        dp_r = (rank // (p.tp * p.cp)) % dp
        pp_r = rank // (p.tp * p.cp * dp)
        out.append(RankPlacement(rank, rank // per_node, rank % per_node, tp_r, cp_r, dp_r, pp_r))
    return out


@dataclass(frozen=True)
class Plan:
    """Everything the plan prints."""

    params: ParamCounts
    flops_per_token: int
    tokens_per_step: int
    micro_batches_per_step: int
    world_size: int
    dp: int
    layout: list[RankPlacement]
    length: StageLength
    """Optimizer steps of the run and where they come from (train.steps or stage.tokens)."""
    bubble: float
    """Pipeline bubble as a fraction of compute time: (pp - 1) / (micro-batches x virtual_pp)."""


def make_plan(cfg: JobConfig) -> Plan:
    """Compute the plan of a validated config."""
    return Plan(
        params=count_params(cfg.model),
        flops_per_token=flops_per_token(cfg.model, cfg.train.seq_length),
        tokens_per_step=tokens_per_step(cfg),
        micro_batches_per_step=micro_batches_per_step(cfg),
        world_size=world_size(cfg),
        dp=data_parallel_size(cfg),
        layout=rank_layout(cfg),
        length=stage_length(cfg),
        bubble=pipeline_bubble(cfg),
    )
