"""Memory per device of a job as megatron-core's engine allocates it (pure Python: printed before anything runs).

Per pipeline stage, of one rank (tp shards the linears and the vocabulary; norms are replicated):

- weights in the compute dtype (megatron DDP's parameter buffer with the distributed optimizer; the same bytes);
- gradients in DDP's `main_grad` buffer: fp32 for bf16/fp16 models (grad_reduce_in_fp32), else the weight dtype;
  the full buffer on every rank, the distributed optimizer only reduce-scatters into it;
- fp32 main weights (bf16/fp16 models only; fp32 weights are their own main weights) and Adam's two fp32
  moments, divided by dp under the distributed optimizer (megatron's DistributedOptimizer);
- the ternary W_q kept for the backward;
- activations of one layer by

    A_layer = e*s*b * (4h/sp + (2ad + 2kd + 3f)/t) + e*a*s^2*b/t        [bytes]

  (e bytes per element, s sequence, b micro-batch, h hidden, a query heads, k KV heads, d head dim, f SwiGLU
  width, t tensor parallel, sp = t with sequence parallelism else 1): the inputs and outputs of the two RMSNorms,
  Q and K after RoPE, V, the attention context, the softmax probabilities of the unfused core attention
  (megatron's local spec; flash attention does not keep them), the gate/up output and the SwiGLU output.
  Selective recompute drops the s^2 term; full recompute keeps only each layer's input e*s*b*h/sp. No dropout.
  The schedule decides how many micro-batches are in flight: 1F1B holds min(pp - r, m) on pipeline rank r; the
  interleaved schedule 2(pp - r - 1) + (v - 1)pp + 1 model chunks of L/(pp v) layers (megatron's warmup count);
- on the last stage the logits (compute dtype) and the fp32 softmax of the vocab-parallel cross-entropy;
- a distillation teacher: its frozen weights on the same stage and its logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bitcpm.config.derived import data_parallel_size, distributed_optimizer, grad_reduce_in_fp32, micro_batches_per_step
from bitcpm.config.model import ModelConfig
from bitcpm.config.root import JobConfig
from bitcpm.plan.counts import count_params

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9
RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device on one pipeline stage, by kind."""

    stage: int
    """Pipeline rank this estimate is for (the one that needs the most)."""
    params: int
    """Parameters this rank holds (its tp shard of the stage)."""
    weights: float
    grads: float
    main_weights: float
    """fp32 main copy of bf16/fp16 weights (0 for fp32 weights), sharded over dp by the distributed optimizer."""
    optimizer: float
    """Adam's first and second moments (fp32), sharded over dp by the distributed optimizer."""
    quant_weights: float
    activations: float
    """With the job's own recompute setting (the three settings below are for comparison)."""
    activations_by_recompute: dict[str, float]
    in_flight: float
    """Micro-batches of activations held at the peak, in units of a full stage's layers."""
    logits: float
    teacher: float
    teacher_name: str | None

    @property
    def total(self) -> float:
        """Everything above (allocator fragmentation and communication buffers come on top)."""
        parts = (self.weights, self.grads, self.main_weights, self.optimizer, self.quant_weights, self.activations)
        return sum(parts) + self.logits + self.teacher


def stage_param_counts(m: ModelConfig, tp: int, pp: int, stage: int) -> tuple[int, int]:
    """(all, quantizable linear) parameters one rank of pipeline rank `stage` holds."""
    c = count_params(m)
    layers = math.ceil(m.num_layers / pp)
    linear = layers * (c.attention_per_layer + c.mlp_per_layer) // tp
    params = linear + 2 * layers * m.hidden_size
    if stage == 0:
        params += c.embedding // tp
    if stage == pp - 1:
        # The final norm and the LM head; a tied head is a second copy of the embedding when pp > 1.
        params += m.hidden_size + (c.lm_head or (c.embedding if pp > 1 else 0)) // tp
    return params, linear


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


def in_flight_stages(cfg: JobConfig, stage: int) -> float:
    """Activations held at the peak on pipeline rank `stage`, in micro-batches of the whole stage's layers."""
    p, m = cfg.parallel, micro_batches_per_step(cfg)
    if p.pp == 1:
        return 1.0
    if p.virtual_pp == 1:
        return float(min(p.pp - stage, m))
    chunks = min(2 * (p.pp - stage - 1) + (p.virtual_pp - 1) * p.pp + 1, m * p.virtual_pp)
    return chunks / p.virtual_pp  # each chunk holds 1/virtual_pp of the stage's layers


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


def stage_memory(cfg: JobConfig, stage: int) -> MemoryEstimate:
    """Per-device memory of one rank of pipeline rank `stage` (see the module docstring)."""
    m, p = cfg.model, cfg.parallel
    e = BYTES.get(cfg.hardware.dtype, 4)
    params, linear = stage_param_counts(m, p.tp, p.pp, stage)
    shards = data_parallel_size(cfg) if distributed_optimizer(cfg) else 1
    layers = math.ceil(m.num_layers / p.pp)
    in_flight = in_flight_stages(cfg, stage)
    seq, micro = cfg.train.seq_length, p.micro_batch_size
    by_recompute = {
        mode: layers * in_flight * layer_activation_bytes(m, seq, micro, p.tp, p.sequence_parallel, mode, e)
        for mode in RECOMPUTE_MODES
    }
    last = stage == p.pp - 1
    logits = seq * micro * m.vocab_size / p.tp * (e + 4) if last else 0.0
    teacher, teacher_bytes = teacher_model(cfg), 0.0
    if teacher is not None:
        t_params, _ = stage_param_counts(teacher, p.tp, p.pp, stage)
        teacher_bytes = t_params * e + (seq * micro * teacher.vocab_size / p.tp * e if last else 0.0)
    return MemoryEstimate(
        stage=stage,
        params=params,
        weights=params * e,
        grads=params * (4 if grad_reduce_in_fp32(cfg) else e),
        main_weights=params * 4 / shards if e != 4 else 0.0,
        optimizer=params * 8 / shards,
        quant_weights=linear * e if cfg.quant.enabled else 0.0,
        activations=by_recompute.get(p.recompute, by_recompute["none"]),
        activations_by_recompute=by_recompute,
        in_flight=in_flight,
        logits=logits,
        teacher=teacher_bytes,
        teacher_name=cfg.stage.teacher_model if teacher is not None else None,
    )


def estimate_memory(cfg: JobConfig) -> MemoryEstimate:
    """The pipeline stage that needs the most memory per device (the first or the last)."""
    return max((stage_memory(cfg, s) for s in sorted({0, cfg.parallel.pp - 1})), key=lambda est: est.total)


def memory_overflow(cfg: JobConfig) -> str | None:
    """One line saying the plan does not fit hardware.memory_gb, or None when it fits (or the size is unknown)."""
    capacity = cfg.hardware.memory_gb
    est = estimate_memory(cfg)
    if not capacity or est.total <= capacity * GB:
        return None
    return (
        f"{est.total / GB:.1f} GB per device exceeds hardware.memory_gb={capacity:g} ({cfg.hardware.name}): "
        "raise parallel.tp/pp, set parallel.recompute=selective|full, lower parallel.micro_batch_size"
    )
