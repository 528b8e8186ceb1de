"""Step time of a job at an assumed MFU, with the pipeline bubble, and the plan's memory and step-time blocks.

Step time = FLOPs of one step (model FLOPs, recompute, a distillation teacher's forward) / devices / (peak x MFU),
times (1 + bubble) with bubble = (pp - 1) / (m x v) for m micro-batches per step and v virtual stages
(the idle share of megatron's 1F1B and interleaved schedules).
"""

from __future__ import annotations

from bitcpm.config.derived import distributed_optimizer, grad_reduce_in_fp32
from bitcpm.config.root import JobConfig
from bitcpm.plan.counts import flops_per_token, human
from bitcpm.plan.layout import Plan
from bitcpm.plan.memory import BYTES, GB, MemoryEstimate, teacher_model

MFU_ASSUMED = 0.40
"""Model FLOPs utilisation the step-time estimate assumes (Megatron-LM reaches 41-47% on H100 in BF16)."""


def step_flops(cfg: JobConfig, plan: Plan) -> float:
    """FLOPs one optimizer step executes on all devices: model FLOPs, recompute, a distillation teacher's forward."""
    m, s = cfg.model, cfg.train.seq_length
    per_token = float(plan.flops_per_token)
    attention_forward = 2 * m.num_layers * s * m.num_attention_heads * m.kv_channels
    if cfg.parallel.recompute == "full":
        per_token += per_token / 3  # one more forward
    elif cfg.parallel.recompute == "selective":
        per_token += attention_forward
    teacher = teacher_model(cfg)
    if teacher is not None:
        per_token += flops_per_token(teacher, s) / 3
    return per_token * plan.tokens_per_step


def step_seconds(cfg: JobConfig, plan: Plan, mfu: float = MFU_ASSUMED) -> float | None:
    """Seconds per step at the assumed MFU of hardware.peak_tflops, bubble included; None when the peak is unknown."""
    peak = cfg.hardware.peak_tflops
    if not peak:
        return None
    return step_flops(cfg, plan) / plan.world_size / (peak * 1e12 * mfu) * (1 + plan.bubble)


def _gb(n: float) -> str:
    return f"{n / GB:.2f}" if n < 10 * GB else f"{n / GB:.1f}"


def memory_lines(cfg: JobConfig, plan: Plan, est: MemoryEstimate) -> list[str]:
    """The plan's memory block, with a warning past hardware.memory_gb."""
    p, dtype = cfg.parallel, cfg.hardware.dtype
    grad_dtype = "fp32" if grad_reduce_in_fp32(cfg) or BYTES.get(dtype, 4) == 4 else dtype
    sharded = f"sharded over dp={plan.dp} (distributed optimizer)" if distributed_optimizer(cfg) else "replicated"
    where = "" if p.pp == 1 else f", pipeline stage {est.stage} of {p.pp}"
    acts = est.activations_by_recompute
    lines = [
        f"memory     per device, GB ({human(est.params)} params{where}): weights {_gb(est.weights)} ({dtype})  "
        f"grads {_gb(est.grads)} ({grad_dtype} main_grad)"
        + (f"  ternary W_q {_gb(est.quant_weights)}" if est.quant_weights else ""),
        f"           optimizer {_gb(est.main_weights + est.optimizer)}: "
        + (f"fp32 main weights {_gb(est.main_weights)} + " if est.main_weights else "")
        + f"Adam m, v {_gb(est.optimizer)}, {sharded}",
        f"           activations {_gb(est.activations)} (recompute={p.recompute}; none {_gb(acts['none'])}, "
        f"selective {_gb(acts['selective'])}, full {_gb(acts['full'])})  logits {_gb(est.logits)}  "
        f"[seq {cfg.train.seq_length} x micro {p.micro_batch_size} x {est.in_flight:g} in flight]",
    ]
    if est.teacher_name:
        lines.append(f"           distill teacher {est.teacher_name} (frozen, {dtype}): {_gb(est.teacher)}")
    elif cfg.stage.name == "distill":
        lines.append("           distill teacher not counted: set stage.teacher_model to its model preset")
    capacity = cfg.hardware.memory_gb
    total = f"           total {_gb(est.total)}" + (f" of {capacity:g} GB ({cfg.hardware.name})" if capacity else "")
    lines.append(total)
    if capacity and est.total > capacity * GB:
        lines.append(
            f"WARNING    {_gb(est.total)} GB per device exceeds hardware.memory_gb={capacity:g} ({cfg.hardware.name}): "
            "raise parallel.tp/pp, set parallel.recompute=selective|full or lower parallel.micro_batch_size "
            "(hardware.allow_memory_overflow=true launches anyway)"
        )
    lines.append(
        "           activations/layer = e*s*b*(4h/sp + (2ad+2kd+3f)/t) + e*a*s^2*b/t bytes "
        "(selective recompute drops the s^2 term; full keeps e*s*b*h/sp)"
    )
    return lines


def step_lines(cfg: JobConfig, plan: Plan) -> list[str]:
    """The plan's step-time block."""
    seconds = step_seconds(cfg, plan)
    if seconds is None:
        return [f"step time  no estimate: hardware.peak_tflops is unknown for {cfg.hardware.name}"]
    steps = plan.length.steps
    total = seconds * steps
    run = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"
    bubble = (
        f", pipeline bubble {plan.bubble:.1%} = (pp-1)/(micro-batches x virtual_pp) = "
        f"{cfg.parallel.pp - 1}/({plan.micro_batches_per_step} x {cfg.parallel.virtual_pp})"
        if cfg.parallel.pp > 1
        else ""
    )
    return [
        f"step time  ~{seconds:.3g} s/step = {plan.tokens_per_step / seconds:,.0f} tokens/s, {steps} steps "
        f"~{run} (assumes {MFU_ASSUMED:.0%} MFU of {cfg.hardware.peak_tflops:g} TFLOP/s per device; "
        f"{step_flops(cfg, plan) / 1e15:.3g} PFLOP/step incl. recompute"
        + (" and teacher forward" if teacher_model(cfg) else "")
        + bubble
        + ")"
    ]


def node_lines(plan: Plan, nodes: int, max_nodes: int = 4) -> list[str]:
    """Which ranks (and parallel coordinates) each node hosts."""
    lines = []
    for node in range(min(nodes, max_nodes)):
        ranks = [r for r in plan.layout if r.node == node]
        if not ranks:
            continue
        span = lambda xs: f"{min(xs)}" if min(xs) == max(xs) else f"{min(xs)}-{max(xs)}"  # noqa: E731
        lines.append(
            f"           node {node}: ranks {span([r.rank for r in ranks])}  tp {span([r.tp for r in ranks])}  "
            f"dp {span([r.dp for r in ranks])}  pp {span([r.pp for r in ranks])}"
        )
    if nodes > max_nodes:
        lines.append(f"           ... {nodes - max_nodes} more nodes")
    return lines
