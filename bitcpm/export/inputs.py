"""What export and evaluation read, checked from its files before any model is built (no torch).

A bitcpm run or checkpoint directory (config.yaml beside a complete checkpoint; ternary where the output packs
trits), a Hugging Face directory (config.json and, where weights are read, .safetensors with readable headers), or
either. Each refusal is one line naming the path and, for a directory of the other kind, what it is instead. The
checkpoint's files are checked against its manifest when it is opened (bitcpm.export.source.resolve), first.
"""

from __future__ import annotations

import json
from pathlib import Path

from bitcpm.config.arguments import InputError, Kind, need_dir
from bitcpm.config.checkpoints import COMPLETE, complete_checkpoint
from bitcpm.config.root import JobConfig

HF_CONFIG = "config.json"


def is_bitcpm_run(path: Path) -> bool:
    """A run directory, its checkpoints/ folder or one checkpoint (by their files, complete or not)."""
    return any((path / name).exists() for name in ("config.yaml", "checkpoints", COMPLETE)) or path.name.startswith(
        "step_"
    )


def is_hf_directory(path: Path) -> bool:
    """A directory with a Hugging Face config.json."""
    return (path / HF_CONFIG).is_file()


def run_job(text: str | Path, ternary: bool = False) -> tuple[Path, JobConfig]:
    """(checkpoint directory, the run's config) of a bitcpm run or checkpoint; ternary: its weights must be."""
    from bitcpm.config.load import load_job

    path = need_dir(text, "bitcpm run or checkpoint directory")
    if is_hf_directory(path) and not is_bitcpm_run(path):
        raise InputError(f"{path}: a Hugging Face checkpoint, expected a bitcpm run or checkpoint directory")
    checkpoint = complete_checkpoint(path)
    if checkpoint is None:
        if not is_bitcpm_run(path):
            raise InputError(f"{path}: not a bitcpm run or checkpoint directory (no config.yaml, checkpoints/)")
        raise InputError(f"{path}: no complete checkpoint (none has its {COMPLETE} marker)")
    config = checkpoint.parent.parent / "config.yaml"
    if not config.is_file():
        raise InputError(f"{path}: no config.yaml in {config.parent} (is it a bitcpm run?)")
    try:
        job = load_job(config)
    except Exception as exc:  # truncated or hand-edited YAML, keys of another version: say which file
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{path}: cannot read {config} ({first})") from None
    if ternary and not job.quant.enabled:
        raise InputError(
            f"{path}: a full-precision run (quant.method=none) has no ternary weights; export it with `hf`, "
            "or pass its ternary QAT run"
        )
    return checkpoint, job


def hf_directory(text: str | Path, weights: bool = True) -> Path:
    """A Hugging Face checkpoint directory: a readable config.json and, when weights, .safetensors files whose
    headers read (their tensors are read by whoever loads them)."""
    from bitcpm.models.minicpm.hf_checkpoint import header, safetensors_files

    path = need_dir(text, "Hugging Face checkpoint directory")
    if not is_hf_directory(path):
        if is_bitcpm_run(path):
            raise InputError(f"{path}: a bitcpm run, expected a Hugging Face directory (python -m bitcpm.export hf)")
        raise InputError(f"{path}: no {HF_CONFIG} (not a Hugging Face checkpoint directory)")
    try:
        config = json.loads((path / HF_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path / HF_CONFIG}: cannot be read as JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise InputError(f"{path / HF_CONFIG}: not a model config (no model_type)")
    if not weights:
        return path
    try:
        files = safetensors_files(path)
        if not files:
            raise InputError(f"{path}: no .safetensors weights beside {HF_CONFIG}")
        for file in files:
            header(file)
    except InputError:
        raise
    except Exception as exc:  # a missing shard of the index, a truncated or foreign file
        raise InputError(f"{path}: its weights cannot be read ({' '.join(str(exc).split())})") from None
    return path


def run_or_hf(text: str | Path) -> Path:
    """A bitcpm run or checkpoint, or a Hugging Face directory with weights (evaluation reads either)."""
    path = need_dir(text, "run, checkpoint or Hugging Face directory")
    if is_hf_directory(path) and not is_bitcpm_run(path):
        return hf_directory(path)
    if not is_bitcpm_run(path):
        raise InputError(f"{path}: neither a bitcpm run or checkpoint nor a Hugging Face directory ({HF_CONFIG})")
    run_job(path)
    return path


def _run(value: str) -> str:
    run_job(value)
    return value


def _ternary_run(value: str) -> str:
    run_job(value, ternary=True)
    return value


RUN = Kind("run", _run)
TERNARY_RUN = Kind("run", _ternary_run, (("ternary", True),))
HF_CONFIG_DIR = Kind("hf", lambda value: str(hf_directory(value, weights=False)), (("weights", False),))
RUN_OR_HF = Kind("run_or_hf", lambda value: str(run_or_hf(value)))
