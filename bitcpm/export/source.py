"""The one place export and evaluation read a bitcpm run or checkpoint: (JobConfig, single-rank megatron model).

A run directory means its newest complete checkpoint; its files are checked against its manifest first. The model
is built at tp=1 in fp32 on the CPU with the run's quantizer, so its forward is bitcpm's own forward of the trained
weights (the reference every export is verified against). Reading the weights is `_load_weights`, the checkpoint
module's weights-only loader: nothing else here knows the checkpoint format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bitcpm.config.root import JobConfig


@dataclass
class Source:
    """A trained model opened for export: its config, checkpoint and tp=1 megatron model."""

    job: JobConfig
    checkpoint: Path
    run_dir: Path
    model: torch.nn.Module
    mlflow_run_id: str | None = None
    """The training run's MLflow run (evaluations log into it)."""


def resolve(path: str | Path, verify: bool = True) -> tuple[Path, Path]:
    """(run directory, checkpoint directory) of a run directory or one of its checkpoints, its files checked
    against the checkpoint's manifest unless verify=False (DamagedCheckpointError, a ValueError, names the first
    bad file)."""
    from bitcpm.config.checkpoint_manifest import require_usable
    from bitcpm.training.stage import resolve_checkpoint

    ckpt_dir = resolve_checkpoint(str(path), "RUN_OR_CHECKPOINT")
    run_dir = ckpt_dir.parent.parent
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{path}: no config.yaml in {run_dir} (is it a bitcpm run?)")
    if verify:  # before the model is built: a damaged source is one line, not a traceback
        require_usable(ckpt_dir, str(path))
    return run_dir, ckpt_dir


def ensure_single_rank() -> None:
    """megatron parallel state for one CPU process (tp=pp=1), unless a caller already set it up."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        return
    from bitcpm.backends import get_backend
    from bitcpm.training.distributed import init_distributed

    backend = get_backend("cpu")
    backend.prepare()
    init_distributed(backend, "gloo", 1, 1, 1, seed=0)


def build_single_rank(job: JobConfig, quantized: bool = True) -> torch.nn.Module:
    """The run's model at tp=1, fp32, CPU, with its quantizer unless quantized=False (weights still random).

    A model for already fake-quantized weights (an export read back) must not quantize again: the absmean of
    trits x s is s times the non-zero fraction, so a second quantization would rescale every group.
    """
    from bitcpm.models import build_model
    from bitcpm.quant.converter import convert_to_ternary

    ensure_single_rank()
    model = build_model(job.model, seq_length=job.train.seq_length, tp=1, dtype="float32", device="cpu")
    if quantized:
        convert_to_ternary(model, job.quant)
    return model.eval()


def _load_weights(ckpt_dir: Path, model: torch.nn.Module) -> str | None:
    """The weights of a checkpoint (torch_dist, any layout) into the tp=1 model; returns the MLflow run id."""
    from bitcpm.training import checkpoint as ckpt

    return ckpt.load_model_weights(ckpt_dir, [model], verified=True).get("mlflow_run_id")  # resolve() checked it


def open_source(path: str | Path, verified: bool = False) -> Source:
    """RUN_OR_CHECKPOINT -> its config and a tp=1 fp32 megatron model holding the trained weights (verified: the
    caller has checked the checkpoint's files against its manifest already)."""
    from bitcpm.config.load import load_job

    run_dir, ckpt_dir = resolve(path, verify=not verified)
    job = load_job(run_dir / "config.yaml")
    model = build_single_rank(job)
    run_id = _load_weights(ckpt_dir, model)
    return Source(job=job, checkpoint=ckpt_dir, run_dir=run_dir, model=model, mlflow_run_id=run_id)
