"""The plan as printed before a launch."""

from __future__ import annotations

from bitcpm.config.derived import base_lr
from bitcpm.config.root import JobConfig
from bitcpm.models.minicpm.mup import effective_settings
from bitcpm.plan.counts import human
from bitcpm.plan.estimate import memory_lines, node_lines, step_lines
from bitcpm.plan.layout import Plan
from bitcpm.plan.memory import estimate_memory


def format_plan(cfg: JobConfig, plan: Plan, launch_lines: list[str] = (), max_ranks: int = 16) -> str:
    """Render the plan as the text shown before a launch (or instead of it, with dry_run); launch_lines last."""
    m, c, p = cfg.model, plan.params, cfg.parallel
    tie = "tied embedding" if m.tie_embeddings else "untied LM head"
    quant = cfg.quant.label
    lines = [
        f"model      {m.name}: {human(c.total)} parameters ({tie}), {human(c.non_embedding)} non-embedding",
        f"           L={m.num_layers} h={m.hidden_size} ffn={m.intermediate_size} heads={m.num_attention_heads}"
        f"/{m.num_kv_heads} head_dim={m.kv_channels} vocab={m.vocab_size} m={m.width_mult:g}",
        f"quant      {quant}   stage {cfg.stage.name}",
        f"compute    {human(plan.flops_per_token)}FLOP/token (seq {cfg.train.seq_length}), "
        f"{plan.tokens_per_step:,} tokens/step, {plan.length.steps} steps = "
        f"{human(plan.tokens_per_step * plan.length.steps)} tokens"
        + ("" if plan.length.origin == "train.steps" else f" ({plan.length.origin})"),
        f"parallel   world={plan.world_size} tp={p.tp} pp={p.pp}"
        + (f" (virtual {p.virtual_pp})" if p.virtual_pp > 1 else "")
        + f" cp={p.cp} dp={plan.dp} micro={p.micro_batch_size} global={p.global_batch_size} "
        f"micro-batches/step={plan.micro_batches_per_step}",
        f"hardware   {cfg.hardware.name} ({cfg.hardware.device}, {cfg.hardware.dist_backend}, "
        f"{cfg.hardware.dtype}) x {plan.world_size} on {cfg.launcher.nodes} node(s), launcher {cfg.launcher.name}",
        "ranks      rank node local  tp cp dp pp",
    ]
    for r in plan.layout[:max_ranks]:
        lines.append(f"           {r.rank:4d} {r.node:4d} {r.local_rank:5d} {r.tp:3d} {r.cp:2d} {r.dp:2d} {r.pp:2d}")
    if len(plan.layout) > max_ranks:
        lines.append(f"           ... {len(plan.layout) - max_ranks} more ranks")
    lines += optimizer_lines(cfg)
    lines += node_lines(plan, cfg.launcher.nodes)
    lines += memory_lines(cfg, plan, estimate_memory(cfg))
    lines += step_lines(cfg, plan)
    lines += launch_lines
    return "\n".join(lines)


def optimizer_lines(cfg: JobConfig) -> list[str]:
    """Per kind of parameter at the peak lr: the lr, AdamW's per-step decay (lr x wd) and eps the optimizer uses."""
    o, lr = cfg.optim, base_lr(cfg)
    stage = f", stage.lr of {cfg.stage.name}" if cfg.stage.lr is not None else ""
    lines = [f"optimizer  AdamW, peak lr {lr:g} ({cfg.model.parameterization}, m={cfg.model.width_mult:g}{stage}):"]
    for kind, v in effective_settings(cfg.model, lr, o.weight_decay, o.eps).items():
        lines.append(
            f"           {kind:<19} lr {v['lr']:.3g}  decay {v['weight_decay']:.3g} "
            f"(x lr = {v['decay_per_step']:.3g}/step)  eps {v['eps']:.3g}"
        )
    return lines
