"""Memory per device and step time of a job, from first principles (pure Python: printed before anything runs).

Memory counts the largest pipeline stage of one rank: weights and gradients in the compute dtype; Adam's two
moments, plus an fp32 master copy of the weights when computing in bf16 (mixed precision: 16 B/param in both
cases, no distributed optimizer); the ternary W_q kept for the backward; activations of one layer by

    A_layer = e*s*b * (4h/sp + (2ad + 2kd + 3f)/t) + e*a*s^2*b/t        [bytes]

(e bytes per element, s sequence, b micro-batch, h hidden, a query heads, k KV heads, d head dim, f SwiGLU
width, t tensor parallel, sp = t with sequence parallelism else 1): the inputs and outputs of the two RMSNorms,
Q and K after RoPE, V, the attention context, the softmax probabilities of the unfused core attention
(megatron's local spec; flash attention does not keep them), the gate/up output and the SwiGLU output.
Selective recompute drops the s^2 term; full recompute keeps only each layer's input e*s*b*h/sp. No dropout
(MiniCPM trains without). With pipeline parallelism the first stage holds min(pp, micro-batches) in flight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bitcpm.config.model import ModelConfig
from bitcpm.config.root import JobConfig
from bitcpm.plan.counts import count_params, flops_per_token
from bitcpm.plan.layout import Plan

MFU_ASSUMED = 0.40
"""Model FLOPs utilisation the step-time estimate assumes (Megatron-LM reaches 41-47% on H100 in BF16)."""
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device, by kind."""

    weights: float
    grads: float
    optimizer: float
    quant_weights: float
    activations: float
    """With the job's own recompute setting (the three settings below are for comparison)."""
    activations_by_recompute: dict[str, float]
    logits: float
    teacher: float
    teacher_name: str | None

    @property
    def total(self) -> float:
        """Everything above (allocator fragmentation and communication buffers come on top)."""
        parts = (self.weights, self.grads, self.optimizer, self.quant_weights, self.activations, self.logits)
        return sum(parts) + self.teacher


def stage_params(m: ModelConfig, tp: int, pp: int) -> tuple[int, int]:
    """(all, quantizable linear) parameters one rank holds on the largest pipeline stage."""
    c = count_params(m)
    layers = math.ceil(m.num_layers / pp)
    linear = layers * (c.attention_per_layer + c.mlp_per_layer) // tp
    norms = 2 * layers * m.hidden_size
    embedding = c.embedding // tp
    head = (c.lm_head or (c.embedding if pp > 1 else 0)) // tp  # a tied head is a second copy on the last stage
    first = linear + norms + embedding + (head + m.hidden_size if pp == 1 else 0)
    last = linear + norms + m.hidden_size + head
    return max(first, last), linear


def layer_activation_bytes(m: ModelConfig, seq: int, micro: int, tp: int, sp: bool, recompute: str, e: int) -> float:
    """A_layer of the module docstring for one micro-batch."""
    s, b, h, f = seq, micro, m.hidden_size, m.intermediate_size
    a, k, d = m.num_attention_heads, m.num_kv_heads, m.kv_channels
    replicated = tp if sp else 1
    if recompute == "full":
        return e * s * b * h / replicated
    linear_part = e * s * b * (4 * h / replicated + (2 * a * d + 2 * k * d + 3 * f) / tp)
    scores = e * a * s * s * b / tp
    return linear_part + (0 if recompute == "selective" else scores)


def teacher_model(cfg: JobConfig) -> ModelConfig | None:
    """The distillation teacher's geometry from its preset (conf/model/<stage.teacher_model>.yaml)."""
    if cfg.stage.name != "distill" or not cfg.stage.teacher_model:
        return None
    from omegaconf import OmegaConf

    from bitcpm.presets import conf_dir

    preset = OmegaConf.load(conf_dir() / "model" / f"{cfg.stage.teacher_model}.yaml")
    model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), preset))
    assert isinstance(model, ModelConfig)
    return model


def estimate_memory(cfg: JobConfig, plan: Plan) -> MemoryEstimate:
    """Per-device memory of the job (see the module docstring for what is counted)."""
    m, p = cfg.model, cfg.parallel
    e = BYTES.get(cfg.hardware.dtype, 4)
    params, linear = stage_params(m, p.tp, p.pp)
    layers = math.ceil(m.num_layers / p.pp)
    in_flight = min(p.pp, plan.grad_accumulation) if p.pp > 1 else 1
    seq, micro = cfg.train.seq_length, p.micro_batch_size
    by_recompute = {
        mode: layers * in_flight * layer_activation_bytes(m, seq, micro, p.tp, p.sequence_parallel, mode, e)
        for mode in ("none", "selective", "full")
    }
    # The logits in the compute dtype plus the fp32 softmax the vocab-parallel cross-entropy keeps.
    logits = seq * micro * m.vocab_size / p.tp * (e + 4)
    teacher, teacher_bytes = teacher_model(cfg), 0.0
    if teacher is not None:
        t_params, _ = stage_params(teacher, p.tp, p.pp)
        teacher_bytes = t_params * e + seq * micro * teacher.vocab_size / p.tp * e
    return MemoryEstimate(
        weights=params * e,
        grads=params * e,
        optimizer=params * (12 if e == 2 else 8),
        quant_weights=linear * e if cfg.quant.enabled else 0.0,
        activations=by_recompute.get(p.recompute, by_recompute["none"]),
        activations_by_recompute=by_recompute,
        logits=logits,
        teacher=teacher_bytes,
        teacher_name=cfg.stage.teacher_model if teacher is not None else None,
    )


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
    """Seconds per step at the assumed MFU of hardware.peak_tflops; None when the peak is unknown."""
    peak = cfg.hardware.peak_tflops
    if not peak:
        return None
    return step_flops(cfg, plan) / plan.world_size / (peak * 1e12 * mfu)


def _gb(n: float) -> str:
    return f"{n / GB:.2f}" if n < 10 * GB else f"{n / GB:.1f}"


def memory_lines(cfg: JobConfig, est: MemoryEstimate) -> list[str]:
    """The plan's memory block, with a warning past hardware.memory_gb."""
    p, e = cfg.parallel, BYTES.get(cfg.hardware.dtype, 4)
    optimizer = "fp32 master + Adam m, v" if e == 2 else "Adam m, v"
    acts = est.activations_by_recompute
    lines = [
        f"memory     per device, GB (largest pipeline stage, {cfg.hardware.dtype}): weights {_gb(est.weights)}  "
        f"grads {_gb(est.grads)}  optimizer {_gb(est.optimizer)} ({optimizer})"
        + (f"  ternary W_q {_gb(est.quant_weights)}" if est.quant_weights else ""),
        f"           activations {_gb(est.activations)} (recompute={p.recompute}; none {_gb(acts['none'])}, "
        f"selective {_gb(acts['selective'])}, full {_gb(acts['full'])})  logits {_gb(est.logits)}  "
        f"[seq {cfg.train.seq_length} x micro {p.micro_batch_size}]",
    ]
    if est.teacher_name:
        frozen = f"frozen, {cfg.hardware.dtype}"
        lines.append(f"           distill teacher {est.teacher_name} ({frozen}): {_gb(est.teacher)}")
    elif cfg.stage.name == "distill":
        lines.append("           distill teacher not counted: set stage.teacher_model to its model preset")
    capacity = cfg.hardware.memory_gb
    total = f"           total {_gb(est.total)}" + (f" of {capacity:g} GB ({cfg.hardware.name})" if capacity else "")
    lines.append(total)
    if capacity and est.total > capacity * GB:
        lines.append(
            f"WARNING    {_gb(est.total)} GB per device exceeds hardware.memory_gb={capacity:g} ({cfg.hardware.name}): "
            "raise parallel.tp/pp, set parallel.recompute=selective|full or lower parallel.micro_batch_size"
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
    total = seconds * cfg.train.steps
    run = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"
    return [
        f"step time  ~{seconds:.3g} s/step = {plan.tokens_per_step / seconds:,.0f} tokens/s, {cfg.train.steps} steps "
        f"~{run} (assumes {MFU_ASSUMED:.0%} MFU of {cfg.hardware.peak_tflops:g} TFLOP/s per device; "
        f"{step_flops(cfg, plan) / 1e15:.3g} PFLOP/step incl. recompute"
        + (" and teacher forward" if teacher_model(cfg) else "")
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
