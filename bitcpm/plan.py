"""Counts and estimates of a job, in pure Python: the plan is printed before anything is built."""

from __future__ import annotations

from dataclasses import dataclass

from bitcpm.config.model import ModelConfig
from bitcpm.config.root import JobConfig
from bitcpm.config.validate import data_parallel_size, world_size


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a MiniCPM decoder."""

    embedding: int
    lm_head: int
    attention_per_layer: int
    mlp_per_layer: int
    norms: int
    num_layers: int

    @property
    def layers(self) -> int:
        """Decoder-layer linear weights (attention + MLP), norms excluded."""
        return self.num_layers * (self.attention_per_layer + self.mlp_per_layer)

    @property
    def non_embedding(self) -> int:
        """Everything but the input embedding and a separate LM head."""
        return self.layers + self.norms

    @property
    def total(self) -> int:
        """All parameters (a tied LM head is counted once)."""
        return self.non_embedding + self.embedding + self.lm_head

    @property
    def matmul(self) -> int:
        """Weights that take part in a matrix multiply: the layers' linears and the LM head."""
        head = self.lm_head or self.embedding  # a tied head still multiplies by the embedding
        return self.num_layers * (self.attention_per_layer + self.mlp_per_layer) + head


def count_params(m: ModelConfig) -> ParamCounts:
    """Exact parameter counts of the megatron-core MiniCPM model (no biases, RMSNorm weights only)."""
    q = m.hidden_size * m.num_attention_heads * m.kv_channels
    kv = 2 * m.hidden_size * m.num_kv_heads * m.kv_channels
    o = m.num_attention_heads * m.kv_channels * m.hidden_size
    mlp = 3 * m.hidden_size * m.intermediate_size  # SwiGLU: gate, up, down
    embedding = m.vocab_size * m.hidden_size
    return ParamCounts(
        embedding=embedding,
        lm_head=0 if m.tie_embeddings else embedding,
        attention_per_layer=q + kv + o,
        mlp_per_layer=mlp,
        norms=(2 * m.num_layers + 1) * m.hidden_size,
        num_layers=m.num_layers,
    )


def flops_per_token(m: ModelConfig, seq_length: int) -> int:
    """Model FLOPs per trained token: 6 x matmul weights + 6 x L x s x h for causal attention."""
    counts = count_params(m)
    attention = 6 * m.num_layers * seq_length * m.num_attention_heads * m.kv_channels
    return 6 * counts.matmul + attention


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


def human(n: float) -> str:
    """Short human-readable count: 433.9M, 8.19B."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            digits = 2 if unit in ("B", "T") else 1
            return f"{n / scale:.{digits}f}{unit}"
    return str(int(n))


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


def format_plan(cfg: JobConfig, plan: Plan, max_ranks: int = 16) -> str:
    """Render the plan as the text shown before a launch (or instead of it, with dry_run)."""
    m, c, p = cfg.model, plan.params, cfg.parallel
    tie = "tied embedding" if m.tie_embeddings else "untied LM head"
    quant = "none" if not cfg.quant.enabled else f"{cfg.quant.method} g={cfg.quant.group_size}"
    lines = [
        f"model      {m.name}: {human(c.total)} parameters ({tie}), {human(c.non_embedding)} non-embedding",
        f"           L={m.num_layers} h={m.hidden_size} ffn={m.intermediate_size} heads={m.num_attention_heads}"
        f"/{m.num_kv_heads} head_dim={m.kv_channels} vocab={m.vocab_size} m={m.width_mult:g}",
        f"quant      {quant}   stage {cfg.stage.name}",
        f"compute    {human(plan.flops_per_token)}FLOP/token (seq {cfg.train.seq_length}), "
        f"{plan.tokens_per_step:,} tokens/step, {cfg.train.steps} steps = "
        f"{human(plan.tokens_per_step * cfg.train.steps)} tokens",
        f"parallel   world={plan.world_size} tp={p.tp} pp={p.pp} cp={p.cp} dp={plan.dp} "
        f"micro={p.micro_batch_size} global={p.global_batch_size} accumulation={plan.grad_accumulation}",
        f"hardware   {cfg.hardware.name} ({cfg.hardware.device}, {cfg.hardware.dist_backend}, "
        f"{cfg.hardware.dtype}) x {plan.world_size} on {cfg.launcher.nodes} node(s), launcher {cfg.launcher.name}",
        "ranks      rank node local  tp cp dp pp",
    ]
    for r in plan.layout[:max_ranks]:
        lines.append(f"           {r.rank:4d} {r.node:4d} {r.local_rank:5d} {r.tp:3d} {r.cp:2d} {r.dp:2d} {r.pp:2d}")
    if len(plan.layout) > max_ranks:
        lines.append(f"           ... {len(plan.layout) - max_ranks} more ranks")
    from bitcpm.estimate import estimate_memory, memory_lines, node_lines, step_lines
    from bitcpm.submission import describe_launch

    lines += node_lines(plan, cfg.launcher.nodes)
    lines += memory_lines(cfg, estimate_memory(cfg, plan))
    lines += step_lines(cfg, plan)
    lines += describe_launch(cfg)
    return "\n".join(lines)
