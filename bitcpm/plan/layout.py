"""The plan of a job: its counts, batch arithmetic and where every rank sits."""

from __future__ import annotations

from dataclasses import dataclass

from bitcpm.config.root import JobConfig
from bitcpm.config.validate import data_parallel_size, world_size
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
    per_node = world_size(cfg) // cfg.launcher.nodes
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
    grad_accumulation: int
    world_size: int
    dp: int
    layout: list[RankPlacement]


def make_plan(cfg: JobConfig) -> Plan:
    """Compute the plan of a validated config."""
    p = cfg.parallel
    dp = data_parallel_size(cfg)
    return Plan(
        params=count_params(cfg.model),
        flops_per_token=flops_per_token(cfg.model, cfg.train.seq_length),
        tokens_per_step=p.global_batch_size * cfg.train.seq_length,
        grad_accumulation=p.global_batch_size // (p.micro_batch_size * dp),
        world_size=world_size(cfg),
        dp=dp,
        layout=rank_layout(cfg),
    )
