"""Cross-group rules checked after composition and before anything heavy is built.

Each rule is one small function that raises ConfigError with a one-line message naming the keys
and values involved. `validate` runs them all in order and stops at the first failure; the first is the
per-leaf table of config/ranges.py (choices, ranges, sizes of single keys), so no rule repeats it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from bitcpm.backends.capabilities import CAPABILITIES
from bitcpm.config.derived import data_parallel_size, world_size  # defined once, in derived
from bitcpm.config.errors import ConfigError, parse_tokens  # re-exported: the public names
from bitcpm.config.parallel import derive_layout
from bitcpm.config.ranges import check_ranges
from bitcpm.config.root import JobConfig


def _fail(message: str) -> None:
    raise ConfigError(message)


def check_heads(cfg: JobConfig) -> None:
    """Query heads group evenly over KV heads, and head_dim fits the width when it is implicit."""
    m = cfg.model
    if m.num_attention_heads % m.num_kv_heads:
        _fail(f"model.num_kv_heads={m.num_kv_heads} must divide model.num_attention_heads={m.num_attention_heads}")
    if m.head_dim is None and m.hidden_size % m.num_attention_heads:
        _fail(
            f"model.num_attention_heads={m.num_attention_heads} must divide model.hidden_size="
            f"{m.hidden_size} (or set model.head_dim)"
        )
    if m.kv_channels % 2:
        _fail(f"model.head_dim={m.kv_channels}: RoPE needs an even head dimension")


def check_tensor_parallel(cfg: JobConfig) -> None:
    """tp divides attention heads, KV heads, the FFN width and the vocabulary."""
    tp, m = cfg.parallel.tp, cfg.model
    for key, value in (
        ("model.num_attention_heads", m.num_attention_heads),
        ("model.num_kv_heads", m.num_kv_heads),
        ("model.intermediate_size", m.intermediate_size),
        ("model.vocab_size", m.vocab_size),
    ):
        if value % tp:
            _fail(f"parallel.tp={tp} must divide {key}={value}")


def quantized_input_dims(cfg: JobConfig) -> dict[str, tuple[str, int]]:
    """Per-rank input width of each quantizable linear (groups run along the input dimension)."""
    m, tp = cfg.model, cfg.parallel.tp
    # Column-parallel layers (qkv, fc1) see the full hidden input; row-parallel layers (proj, fc2)
    # see their input split over tp ranks.
    return {
        "linear_qkv": ("model.hidden_size", m.hidden_size),
        "linear_fc1": ("model.hidden_size", m.hidden_size),
        "linear_proj": ("model.num_attention_heads*head_dim/tp", m.num_attention_heads * m.kv_channels // tp),
        "linear_fc2": ("model.intermediate_size/tp", m.intermediate_size // tp),
    }


def check_quant(cfg: JobConfig) -> None:
    """Ternary groups tile the per-rank input dimension of every quantized linear."""
    q = cfg.quant
    if not q.enabled:
        return
    dims = quantized_input_dims(cfg)
    for target in q.targets:
        if target not in dims:
            _fail(f"quant.targets: unknown module '{target}' (expected some of {', '.join(dims)})")
    if q.group_size == -1:
        return
    for target in q.targets:
        key, width = dims[target]
        if width % q.group_size:
            _fail(
                f"quant.group_size={q.group_size} must divide the per-rank input of {target}: "
                f"{key}={width} (parallel.tp={cfg.parallel.tp})"
            )


def check_quant_kernel(cfg: JobConfig) -> None:
    """quant.kernel names an implementation the device can run (Triton kernels exist only for CUDA)."""
    kernel, device = cfg.quant.kernel, cfg.hardware.device
    if kernel == "triton" and device != "cuda":
        _fail(f"quant.kernel=triton needs hardware.device=cuda (got {device}); use compile or eager")


def check_world(cfg: JobConfig) -> None:
    """tp x pp x cp x dp equals the world size the launcher provides."""
    world, mp = world_size(cfg), cfg.parallel.model_parallel_size
    if world % mp:
        _fail(
            f"world size {world} (launcher.nodes={cfg.launcher.nodes} x launcher.procs_per_node="
            f"{cfg.launcher.procs_per_node}) is not a multiple of tp*pp*cp={mp}"
        )


def check_batch(cfg: JobConfig) -> None:
    """global batch = micro batch x data-parallel size x accumulation steps."""
    p, dp = cfg.parallel, data_parallel_size(cfg)
    if p.global_batch_size % (p.micro_batch_size * dp):
        _fail(
            f"parallel.global_batch_size={p.global_batch_size} must be divisible by "
            f"parallel.micro_batch_size={p.micro_batch_size} x dp={dp}"
        )


def check_backend(cfg: JobConfig) -> None:
    """The chosen device backend supports the parallel features asked for."""
    device, p = cfg.hardware.device, cfg.parallel
    caps = CAPABILITIES[device]
    if p.pp > 1 and not caps.pipeline_parallel:
        _fail(f"parallel.pp={p.pp}: pipeline parallelism is not available on hardware.device={device}")
    if p.cp > 1 and not caps.context_parallel:
        _fail(
            f"parallel.cp={p.cp}: context parallelism is not available on hardware.device={device} "
            "(bitcpm's SDPA layer spec does not split the sequence)"
        )
    if p.sequence_parallel and not caps.sequence_parallel:
        _fail(f"parallel.sequence_parallel=true: not available on hardware.device={device}")
    if p.sequence_parallel and p.tp == 1:
        _fail("parallel.sequence_parallel=true needs parallel.tp > 1")
    if cfg.hardware.dtype not in caps.dtypes:
        _fail(f"hardware.dtype={cfg.hardware.dtype}: expected one of {', '.join(caps.dtypes)}")


def check_pipeline(cfg: JobConfig) -> None:
    """Stages split the layers evenly; 1F1B keeps every stage busy; interleaving needs pp > 1."""
    p, m = cfg.parallel, cfg.model
    if p.virtual_pp < 1:
        _fail(f"parallel.virtual_pp={p.virtual_pp}: must be >= 1")
    if p.virtual_pp > 1 and p.pp == 1:
        _fail(f"parallel.virtual_pp={p.virtual_pp} needs parallel.pp > 1 (interleaving splits pipeline stages)")
    chunks = p.pp * p.virtual_pp
    if m.num_layers % chunks:
        _fail(
            f"model.num_layers={m.num_layers} must be divisible by parallel.pp x parallel.virtual_pp="
            f"{p.pp}x{p.virtual_pp}={chunks}"
        )
    if p.pp == 1:
        return
    layout = derive_layout(p, world_size(cfg))
    dp, micro = layout.dp, layout.micro_batches_per_step
    if micro < p.pp:
        _fail(
            f"parallel.pp={p.pp} needs at least pp micro-batches per step: parallel.global_batch_size="
            f"{p.global_batch_size} / (parallel.micro_batch_size={p.micro_batch_size} x dp={dp}) = {micro}"
        )
    if p.virtual_pp > 1 and micro % p.pp:
        _fail(
            f"parallel.virtual_pp={p.virtual_pp}: interleaved 1F1B needs micro-batches per step ({micro}) "
            f"divisible by parallel.pp={p.pp}"
        )
    if cfg.stage.name == "distill":
        _fail(f"stage=distill runs the teacher beside the student: use parallel.pp=1 (got {p.pp})")


def check_engine(cfg: JobConfig) -> None:
    """Engine switches: parameter-gather overlap needs the distributed optimizer."""
    p = cfg.parallel
    layout = derive_layout(p, world_size(cfg))
    dp = layout.dp
    if p.overlap_param_gather and not layout.distributed_optimizer:
        _fail(
            "parallel.overlap_param_gather=true needs the distributed optimizer "
            f"(parallel.distributed_optimizer={p.distributed_optimizer}, dp={dp})"
        )


def check_sequence(cfg: JobConfig) -> None:
    """Training sequences fit the position tables, and LongRoPE factors match the head size."""
    m, s = cfg.model, cfg.train.seq_length
    if s > m.max_position_embeddings:
        _fail(f"train.seq_length={s} exceeds model.max_position_embeddings={m.max_position_embeddings}")
    if m.rope.type == "longrope":
        half = m.kv_channels // 2
        for key in ("short_factor", "long_factor"):
            factors = getattr(m.rope, key)
            if factors is None or len(factors) != half:
                got = "null" if factors is None else f"{len(factors)} values"
                _fail(f"model.rope.{key}: LongRoPE needs head_dim/2={half} factors, got {got}")
        if m.rope.original_max_position_embeddings is None:
            _fail("model.rope.original_max_position_embeddings is required for model.rope.type=longrope")


def check_stage(cfg: JobConfig) -> None:
    """Each stage has the fields it needs."""
    st = cfg.stage
    # A dry run only plans: it may leave the source out (the plan says what it could not know).
    if st.name in ("qat", "distill") and not st.init_from and not cfg.dry_run:
        _fail(f"stage.init_from is required for stage={st.name} (a checkpoint or run directory)")
    if st.name == "qat" and not cfg.quant.enabled:
        _fail("stage=qat needs a quantizer: set quant=ternary_g128 (or another ternary preset)")
    if st.name == "distill" and not st.teacher_from:
        _fail("stage.teacher_from is required for stage=distill (the teacher's checkpoint or run)")
    if parse_tokens(st.tokens) == "auto" and st.name == "pretrain":
        _fail("stage.tokens=auto only applies to stage=qat (2x the source run's decay tokens)")


def check_schedule(cfg: JobConfig) -> None:
    """Warmup and decay fit inside the run."""
    o, steps = cfg.optim, cfg.train.steps
    if parse_tokens(cfg.stage.tokens) is None and o.warmup_steps + math.floor(o.decay_fraction * steps) > steps:
        _fail(
            f"optim.warmup_steps={o.warmup_steps} + decay ({o.decay_fraction} x train.steps={steps}) "
            "exceeds train.steps"
        )


def check_stage_rewarmup(cfg: JobConfig) -> None:
    """A qat/distill re-warmup plus the decay fits inside the stage's derived length (stage.tokens=auto too)."""
    st = cfg.stage
    if st.name == "pretrain" or st.rewarmup_steps == 0:
        return
    # Imported here: stage_length reads source runs' files, needed only for QAT stages.
    from bitcpm.config.stage_length import stage_length

    length = stage_length(cfg)
    if not length.known:
        return  # the source run does not exist yet (a later pipeline stage): checked when the stage starts
    decay = math.floor(cfg.optim.decay_fraction * length.steps)
    if st.rewarmup_steps + decay > length.steps:
        _fail(
            f"stage.rewarmup_steps={st.rewarmup_steps} + decay ({cfg.optim.decay_fraction} x {length.steps}) "
            f"exceeds the stage's {length.steps} steps ({length.origin})"
        )


def check_start_steps(cfg: JobConfig) -> None:
    """stage.branch_step and stage.init_step each name a step of stage.init_from's run (one of them at a time),
    whose schedule stage.tokens=auto cannot read."""
    st = cfg.stage
    for key, step in (("branch_step", st.branch_step), ("init_step", st.init_step)):
        if step is None:
            continue
        if not st.init_from:
            _fail(f"stage.{key}={step} needs stage.init_from (the run directory whose checkpoint it starts from)")
        if parse_tokens(st.tokens) == "auto":
            _fail(f"stage.{key}: stage.tokens=auto counts a finished run's decay (set train.steps or stage.tokens)")
    if st.branch_step is not None and st.init_step is not None:
        _fail("stage.init_step: a decay branch (stage.branch_step) already starts from its own step; set one of them")


def check_branch(cfg: JobConfig) -> None:
    """A decay branch (stage.branch_step) starts before its own decay begins."""
    st = cfg.stage
    if st.branch_step is None or not st.init_from:
        return
    from bitcpm.config.stage_length import stage_length

    steps = stage_length(cfg).steps
    # The source's lr was constant up to the branch step: the branch equals a run of its own schedule from step 0
    # only when that schedule has not started decaying there yet.
    decay_start = steps - math.floor(cfg.optim.decay_fraction * steps)
    if st.branch_step >= steps or st.branch_step > decay_start:
        _fail(
            f"stage.branch_step={st.branch_step} must come before the end ({steps} steps) and no later than "
            f"the start of this run's decay (step {decay_start}: optim.decay_fraction={cfg.optim.decay_fraction})"
        )


def check_data(cfg: JobConfig) -> None:
    """The mixture names at least one source, each with its inputs."""
    d = cfg.data
    if not d.sources:
        _fail("data.sources is empty: name at least one dataset")
    for i, src in enumerate(d.sources):
        if not src.inputs:
            _fail(f"data.sources[{i}].inputs is empty")


def check_launcher(cfg: JobConfig) -> None:
    """The launcher can place the job (by its capabilities), then its own rules (its schema's check)."""
    lc = cfg.launcher
    caps = lc.capabilities()
    if lc.nodes != 1 and not caps.multi_node:
        spanning = [name for name, schema in lc.schemas().items() if schema().capabilities().multi_node]
        _fail(
            f"launcher.nodes={lc.nodes}: {lc.label()} runs on this machine "
            f"(use {' or '.join(f'launcher={name}' for name in spanning)})"
        )
    lc.check(cfg)
    if caps.requeue and "SIGUSR2" not in cfg.train.stop_signals:
        _fail(f"{lc.label()} warns a job with SIGUSR2 before its time limit: keep SIGUSR2 in train.stop_signals")


RULES: tuple[Callable[[JobConfig], None], ...] = (
    check_ranges,  # single keys first: the rules below may divide by a size or index by a choice
    check_heads,
    check_tensor_parallel,
    check_quant,
    check_quant_kernel,
    check_world,
    check_batch,
    check_backend,
    check_pipeline,
    check_engine,
    check_sequence,
    check_stage,
    check_schedule,
    check_stage_rewarmup,
    check_start_steps,
    check_branch,
    check_data,
    check_launcher,
)


def validate(cfg: JobConfig) -> None:
    """Run every rule; raise ConfigError on the first that fails."""
    for rule in RULES:
        rule(cfg)
