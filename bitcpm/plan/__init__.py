"""Counts and estimates of a job in pure Python (no torch): the plan is printed before anything is built."""

from bitcpm.plan.counts import ParamCounts, count_params, flops_per_token, human
from bitcpm.plan.layout import Plan, RankPlacement, make_plan, rank_layout
from bitcpm.plan.render import format_plan

__all__ = [
    "ParamCounts",
    "Plan",
    "RankPlacement",
    "count_params",
    "flops_per_token",
    "format_plan",
    "human",
    "make_plan",
    "rank_layout",
]
