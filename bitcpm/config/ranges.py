"""Allowed values of every leaf key of the schema, and the generic check that enforces them.

Every int, float and str field of every config dataclass has an entry in SPECS (a test walks the schema
and fails on a field without one): a numeric Range, a OneOf choice, a Custom parser, or Text for names,
paths and free text. Lists and dicts are checked element by element. Booleans need no entry.
"""

from __future__ import annotations

import dataclasses
import signal
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bitcpm.backends.capabilities import CAPABILITIES
from bitcpm.config.bench import BenchConfig
from bitcpm.config.data import DataConfig, DataSourceConfig
from bitcpm.config.errors import ConfigError, parse_tokens
from bitcpm.config.hardware import HardwareConfig
from bitcpm.config.launcher import CannConfig, LauncherConfig
from bitcpm.config.model import ModelConfig, RopeConfig
from bitcpm.config.optim import OptimConfig
from bitcpm.config.parallel import ParallelConfig
from bitcpm.config.pipeline import PipelineStageConfig
from bitcpm.config.quant import DEFAULT_TARGETS, QUANT_KERNELS, QUANT_METHODS, QuantConfig
from bitcpm.config.root import JobConfig, TrainConfig
from bitcpm.config.stage import StageConfig
from bitcpm.config.tracking import TrackingConfig
from bitcpm.config.typecheck import strip_optional


@dataclass(frozen=True)
class Range:
    """A numeric interval; `also` lists special values allowed outside it (e.g. -1 = per channel)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple[float, ...] = ()

    def ok(self, value: Any) -> bool:
        """Whether the value lies in the interval (or is one of the special values)."""
        if value in self.also:
            return True
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        """The interval in words, e.g. 'expected a value in [0, 1)'."""
        if self.lo is not None and self.hi is not None:
            text = f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        else:
            text = f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        extra = "".join(f" or {_num(v)}" for v in self.also)
        return f"expected a value {text}{extra}"

    def outside(self) -> float:
        """A value this range refuses (for tests generated from the schema)."""
        if self.lo is not None:
            return self.lo if self.lo_open else self.lo - 1
        assert self.hi is not None
        return self.hi if self.hi_open else self.hi + 1


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values."""

    values: tuple[Any, ...]
    hint: str | None = None
    """Shown instead of the full list when it is long (signal names)."""

    def ok(self, value: Any) -> bool:
        """Whether the value is one of the choices."""
        return value in self.values

    def describe(self) -> str:
        """The choices in words."""
        return self.hint or f"expected one of {', '.join(map(str, self.values))}"

    def outside(self) -> str:
        """A value that is none of the choices."""
        return "no_such_choice"


@dataclass(frozen=True)
class Custom:
    """A parser that raises ConfigError for a bad value (e.g. stage.tokens)."""

    parse: Callable[[Any], Any]
    bad: str

    def outside(self) -> str:
        """A value the parser refuses."""
        return self.bad


@dataclass(frozen=True)
class Text:
    """Any string: a name, a path or free text (existence of paths is checked in preflight)."""

    what: str
    kind: str | None = None
    """For a path the job reads or writes, its kind (bitcpm.config.arguments.Kind names): the tests try that
    kind's bad values on the key."""


Spec = Range | OneOf | Custom | Text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


POSITIVE = Range(lo=0, lo_open=True)
AT_LEAST_1 = Range(lo=1)
NON_NEGATIVE = Range(lo=0)
UNIT_OPEN = Range(0, 1, hi_open=True)
UNIT = Range(0, 1)
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
    LauncherConfig: {
        "name": OneOf(("local", "slurm", "ascend")),
        "nodes": AT_LEAST_1,
        "procs_per_node": AT_LEAST_1,
        "master_port": Range(1, 65535),
        "max_parallel": AT_LEAST_1,
        "threads_per_trial": AT_LEAST_1,
        "partition": Text("Slurm partition"),
        "account": Text("Slurm account"),
        "qos": Text("Slurm QOS"),
        "time_min": AT_LEAST_1,
        "constraint": Text("Slurm constraint"),
        "gpus_per_node": NON_NEGATIVE,
        "cpus_per_task": AT_LEAST_1,
        "mem_gb": AT_LEAST_1,
        "sbatch": Text("sbatch option value"),
        "setup": Text("shell line"),
        "signal_delay_s": AT_LEAST_1,
        "max_restarts": NON_NEGATIVE,
        "scheduler": OneOf(("slurm", "none")),
        "hosts": Text("host address"),
        "device_ips": Text("device IP"),
    },
    CannConfig: {
        "set_env": Text("path"),
        "hccl_connect_timeout": AT_LEAST_1,
        "hccl_exec_timeout": AT_LEAST_1,
        "hccl_socket_ifname": Text("NIC name"),
        "visible_devices": Text("device list"),
        "alloc_conf": Text("allocator setting"),
        "task_queue_enable": Range(0, 2),
        "cpu_affinity": Range(1, 2),
        "extra": Text("environment value"),
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


def leaf_fields(schema: type = JobConfig, prefix: str = "") -> Iterator[Leaf]:
    """Every leaf field under a dataclass schema, depth first."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = strip_optional(hints[f.name])
        element = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            yield from leaf_fields(hint, f"{prefix}{f.name}.")
        elif element is not None and dataclasses.is_dataclass(element):
            yield from leaf_fields(element, f"{prefix}{f.name}[].")
        else:
            yield Leaf(f"{prefix}{f.name}", schema, f.name, hint)


def spec_of(owner: type, name: str) -> Spec | None:
    """The declared spec of a field, or None (booleans, dataclass-valued fields)."""
    return SPECS.get(owner, {}).get(name)


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
