"""Allowed values of every leaf key of the schema, and the generic check that enforces them.

Every int, float and str field of every config dataclass has an entry in SPECS, or in its dataclass's own
value_specs() (the launcher schemas declare theirs next to their fields), and a test walks the schema and
fails on a field without one: a numeric Range, a OneOf choice, a Custom parser, or Text for names, paths and
free text (config/specs.py). Lists and dicts are checked element by element. Booleans need no entry.
"""

from __future__ import annotations

import dataclasses
import signal
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bitcpm.backends.capabilities import CAPABILITIES
from bitcpm.config.bench import BenchConfig
from bitcpm.config.data import DataConfig, DataSourceConfig
from bitcpm.config.errors import ConfigError, parse_tokens
from bitcpm.config.hardware import HardwareConfig
from bitcpm.config.model import ModelConfig, RopeConfig
from bitcpm.config.optim import OptimConfig
from bitcpm.config.parallel import ParallelConfig
from bitcpm.config.pipeline import PipelineStageConfig
from bitcpm.config.quant import DEFAULT_TARGETS, QUANT_KERNELS, QUANT_METHODS, QuantConfig
from bitcpm.config.root import JobConfig, TrainConfig
from bitcpm.config.specs import AT_LEAST_1, NON_NEGATIVE, POSITIVE, UNIT, UNIT_OPEN, Custom, OneOf, Range, Spec, Text
from bitcpm.config.stage import StageConfig
from bitcpm.config.tracking import TrackingConfig
from bitcpm.config.typecheck import strip_optional

SEED = Range(0, 2**32 - 1)  # numpy's seed range
# Signals a process can catch; SIGKILL and SIGSTOP cannot be handled, so they cannot stop a run gracefully.
SIGNAL_NAMES = tuple(s.name for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP))

SPECS: dict[type, dict[str, Spec]] = {
    ModelConfig: {
        "name": Text("preset name"),
        "source": Text("citation"),
        "architecture": OneOf(("minicpm",)),
        "hidden_size": AT_LEAST_1,
        "intermediate_size": AT_LEAST_1,
        "num_layers": AT_LEAST_1,
        "num_attention_heads": AT_LEAST_1,
        "num_kv_heads": AT_LEAST_1,
        "head_dim": AT_LEAST_1,
        "vocab_size": AT_LEAST_1,
        "max_position_embeddings": AT_LEAST_1,
        "norm_eps": POSITIVE,
        "scale_emb": POSITIVE,
        "dim_model_base": AT_LEAST_1,
        "scale_depth": POSITIVE,
        "init_std": POSITIVE,
        "parameterization": OneOf(("mup", "sp")),
    },
    RopeConfig: {
        "type": OneOf(("default", "longrope")),
        "theta": POSITIVE,
        "short_factor": POSITIVE,
        "long_factor": POSITIVE,
        "original_max_position_embeddings": AT_LEAST_1,
    },
    ParallelConfig: {
        "tp": AT_LEAST_1,
        "pp": AT_LEAST_1,
        "cp": AT_LEAST_1,
        "micro_batch_size": AT_LEAST_1,
        "global_batch_size": AT_LEAST_1,
        "recompute": OneOf(("none", "selective", "full")),
        "virtual_pp": AT_LEAST_1,
        "bucket_size_mb": POSITIVE,
    },
    QuantConfig: {
        "method": OneOf(QUANT_METHODS),
        "group_size": Range(lo=1, also=(-1,)),
        "targets": OneOf(tuple(DEFAULT_TARGETS)),
        "eps": NON_NEGATIVE,
        "activation_bits": Range(2, 8),
        "kernel": OneOf(QUANT_KERNELS),
    },
    StageConfig: {
        "name": OneOf(("pretrain", "qat", "distill")),
        "init_from": Text("checkpoint, run or Hugging Face directory", "run_or_hf"),
        "branch_step": AT_LEAST_1,
        "init_step": AT_LEAST_1,
        "lr": POSITIVE,
        "rewarmup_steps": NON_NEGATIVE,
        "tokens": Custom(parse_tokens, "lots"),
        "teacher_from": Text("checkpoint or run directory", "run"),
        "teacher_model": Text("model preset name"),
        "alpha": UNIT,
        "temperature": POSITIVE,
    },
    DataSourceConfig: {
        "name": Text("label"),
        "inputs": Text("jsonl path or builtin", "jsonl"),
        "weight": POSITIVE,
        "megatron_prefix": Text("Megatron-LM dataset prefix", "megatron_prefix"),
    },
    DataConfig: {
        "tokenizer": Text("tokenizer directory or builtin", "tokenizer"),
        "text_key": Text("JSON field"),
        "valid_fraction": Range(0, 0.5, lo_open=True, hi_open=True),
        "cache_dir": Text("directory", "output_dir"),
        "seed": SEED,
    },
    OptimConfig: {
        "lr": POSITIVE,
        "min_lr_ratio": UNIT_OPEN,
        "weight_decay": NON_NEGATIVE,
        "beta1": UNIT_OPEN,
        "beta2": UNIT_OPEN,
        "eps": POSITIVE,
        "clip_grad": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE,
        "decay_fraction": UNIT,
        "decay_style": OneOf(("exponential", "linear")),
        "decay_half_life": POSITIVE,
    },
    TrackingConfig: {
        "backend": OneOf(("mlflow", "none")),
        "uri": Text("tracking URI"),
        "experiment": Text("experiment name"),
        "run_name": Text("run name"),
        "log_interval": AT_LEAST_1,
        "tags": Text("tag value"),
    },
    HardwareConfig: {
        "name": Text("preset name"),
        "device": OneOf(tuple(CAPABILITIES)),
        "dist_backend": OneOf(("gloo", "nccl", "hccl")),
        "dtype": OneOf(("float32", "bfloat16")),
        "peak_tflops": POSITIVE,
        "memory_gb": POSITIVE,
        "devices_per_node": AT_LEAST_1,
    },
    TrainConfig: {
        "seq_length": AT_LEAST_1,
        "steps": AT_LEAST_1,
        "seed": SEED,
        "eval_interval": NON_NEGATIVE,
        "eval_batches": NON_NEGATIVE,
        "save_interval": NON_NEGATIVE,
        "output_root": Text("directory", "output_dir"),
        "keep_checkpoints": AT_LEAST_1,
        "nan_policy": OneOf(("skip", "stop")),
        "max_nan_skips": NON_NEGATIVE,
        "stop_signals": OneOf(SIGNAL_NAMES, "expected a catchable signal name such as SIGTERM, SIGUSR2 or SIGINT"),
    },
    BenchConfig: {"warmup_steps": NON_NEGATIVE, "timed_steps": AT_LEAST_1, "repeats": AT_LEAST_1},
    PipelineStageConfig: {"name": Text("stage label"), "overrides": Text("Hydra override")},
    JobConfig: {"experiment_name": Text("recipe name"), "study": Text("study variable")},
}


@dataclass(frozen=True)
class Leaf:
    """One leaf field of the schema: its dotted key ([] marks a list of dataclasses), owner and type."""

    key: str
    owner: type
    name: str
    hint: Any
    select: tuple[str, ...] = ()
    """Overrides that make the key exist (a variant's keys: launcher=slurm for launcher.partition)."""


def leaf_fields(schema: type = JobConfig, prefix: str = "", select: tuple[str, ...] = ()) -> Iterator[Leaf]:
    """Every leaf field under a dataclass schema, depth first; a variant node's keys once, from the first variant."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = strip_optional(hints[f.name])
        element = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint) and hasattr(hint, "schemas"):
            yield from _variant_leaves(hint, f.name, prefix, select)
        elif dataclasses.is_dataclass(hint):
            yield from leaf_fields(hint, f"{prefix}{f.name}.", select)
        elif element is not None and dataclasses.is_dataclass(element):
            yield from leaf_fields(element, f"{prefix}{f.name}[].", select)
        else:
            yield Leaf(f"{prefix}{f.name}", schema, f.name, hint, select)


def _variant_leaves(base: type, group: str, prefix: str, select: tuple[str, ...]) -> Iterator[Leaf]:
    """The leaves of every variant of a node (config group `group`, one preset per variant name)."""
    seen = {leaf.key for leaf in leaf_fields(base, f"{prefix}{group}.", select)}
    yield from leaf_fields(base, f"{prefix}{group}.", select)
    for name, variant in base.schemas().items():
        for leaf in leaf_fields(variant, f"{prefix}{group}.", (*select, f"{group}={name}")):
            if leaf.key not in seen:
                seen.add(leaf.key)
                yield leaf


def spec_of(owner: type, name: str) -> Spec | None:
    """The declared spec of a field (SPECS, else the dataclass's value_specs()), or None (booleans, dataclasses)."""
    if owner in SPECS:
        return SPECS[owner].get(name)
    own = getattr(owner, "value_specs", None)
    return own().get(name) if own is not None else None


def _values(value: Any) -> Iterator[tuple[str, Any]]:
    """A leaf's scalar values with the suffix that addresses them ([i] in lists, .k in dicts)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            for suffix, v in _values(item):
                yield f"[{i}]{suffix}", v
    elif isinstance(value, dict):
        for k, v in value.items():
            yield f".{k}", v
    else:
        yield "", value


def _check_value(key: str, spec: Spec, value: Any) -> None:
    if value is None or isinstance(spec, Text):
        return
    if isinstance(spec, Custom):
        spec.parse(value)
        return
    if not spec.ok(value):
        raise ConfigError(f"{key}={value}: {spec.describe()}")


def _walk(obj: Any, prefix: str) -> Iterator[tuple[str, type, str, Any]]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _walk(value, f"{key}.")
        elif isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                yield from _walk(item, f"{key}[{i}].")
        else:
            yield key, type(obj), f.name, value


def check_ranges(job: JobConfig) -> None:
    """Every leaf value lies in its declared range or choice set; raise ConfigError naming the first that does not."""
    for key, owner, name, value in _walk(job, ""):
        spec = spec_of(owner, name)
        if spec is None:
            continue
        for suffix, item in _values(value):
            _check_value(f"{key}{suffix}", spec, item)
