"""Convert a checkpoint of earlier bitcpm versions (one torch file per tp rank) to the torch_dist format.

    python -m bitcpm.training.convert_checkpoint RUN_DIR/checkpoints/step_00001000

Runs in one CPU process: the tp shards are merged into full tensors (weights and AdamW moments, using
megatron's partition_dim/partition_stride of each parameter), loaded into the model built from the run's
config.yaml, and saved through the new checkpoint writer in place of the old directory, which is kept
next to it as legacy_step_XXXXXXXX. The converted checkpoint resumes at any layout and, like every checkpoint
written now, carries a MANIFEST.json of its files. Every directory given is checked before the first is converted
(complete, old-format shards that read whole, the run's config.yaml beside it): a bad one is one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from bitcpm.config.arguments import Kind, OneLineParser
from bitcpm.models.tp_shards import merge_shards
from bitcpm.training import checkpoint as ckpt


class ConvertError(ValueError):
    """Input the converter cannot take."""


def _merge(param: torch.nn.Parameter, values: list[torch.Tensor]) -> torch.Tensor:
    if len(values) == 1 or not getattr(param, "tensor_model_parallel", False):
        return values[0]  # replicated over tp (norms): every rank holds the same tensor
    return merge_shards(values, int(param.partition_dim), int(getattr(param, "partition_stride", 1)))


def _load_shard(path: Path) -> dict[str, Any]:
    """One old shard file; a truncated or corrupt one (old checkpoints have no manifest) is one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ConvertError(f"{path}: cannot be read, the file is damaged ({_first_sentence(exc)})") from None


def _first_sentence(exc: BaseException) -> str:
    # torch's reader appends a paragraph of advice to its one useful sentence.
    return " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__


def check_legacy(ckpt_dir: Path) -> list[Path]:
    """The shard files of an old checkpoint, tp rank order, checked without loading them: the directory is a
    complete old-format checkpoint with the run's config.yaml beside it, and every shard is a whole torch file."""
    if not ckpt_dir.exists():
        raise ConvertError(f"{ckpt_dir}: no such checkpoint directory")
    if not ckpt_dir.is_dir():
        raise ConvertError(f"{ckpt_dir}: is a file, expected an old checkpoint directory (RUN_DIR/checkpoints/step_N)")
    if not (ckpt_dir / ckpt.COMPLETE).exists():
        raise ConvertError(f"{ckpt_dir}: not a complete checkpoint (no {ckpt.COMPLETE} marker)")
    files = sorted(ckpt_dir.glob("shard_tp*_pp00.pt"))
    if not files:
        raise ConvertError(f"{ckpt_dir}: no shard_tpXX_pp00.pt files (already converted, or not a bitcpm checkpoint)")
    if any(ckpt_dir.glob("shard_tp*_pp0[1-9].pt")):
        raise ConvertError(f"{ckpt_dir}: pipeline-parallel shards; earlier bitcpm versions never wrote them")
    for file in files:  # torch files are zip archives: their checksums find a truncated or damaged shard
        try:
            with zipfile.ZipFile(file) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ConvertError(f"{file}: cannot be read, the file is damaged ({_first_sentence(exc)})") from None
        if bad is not None:
            raise ConvertError(f"{file}: cannot be read, the file is damaged ({bad} fails its checksum)")
    config = ckpt_dir.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise ConvertError(f"{config} not found: the converter builds the model from the run's config")
    return files


def read_legacy(ckpt_dir: Path) -> list[dict[str, Any]]:
    """The per-tp-rank states of an old checkpoint, tp rank order."""
    shards = [_load_shard(f) for f in check_legacy(ckpt_dir)]
    if "optimizer" not in shards[0]:  # model shards beside optim_rankNNNNN.pt files: a development build's
        raise ConvertError(
            f"{ckpt_dir}: written by an interim development build (optim_rank*.pt files), whose optimizer "
            "state this converter cannot map; rerun that training from its last checkpoint of a release"
        )
    return shards


def _full_state(model: torch.nn.Module, shards: list[dict[str, Any]]) -> tuple[dict, dict]:
    """(model state dict, {param name: AdamW state}) at tp=1."""
    params = dict(model.named_parameters())
    weights = {}
    for key, value in shards[0]["model"].items():
        if isinstance(value, torch.Tensor) and key in params:
            value = _merge(params[key], [s["model"][key] for s in shards])
        weights[key] = value
    first = shards[0]["optimizer"]
    names = [name for group in first["param_groups"] for name in group["names"]]
    moments = {}
    for index, entry in first["state"].items():
        name = names[index]
        moments[name] = {
            k: _merge(params[name], [s["optimizer"]["state"][index][k] for s in shards]) if k != "step" else v
            for k, v in entry.items()
        }
    return weights, moments


def convert(ckpt_dir: Path) -> Path:
    """Convert one old checkpoint directory in place; returns where the old files were kept."""
    ckpt_dir = ckpt_dir.resolve()
    shards = read_legacy(ckpt_dir)  # checked before megatron is imported: a refusal is one quiet line
    run_dir = ckpt_dir.parent.parent
    config = run_dir / "config.yaml"
    if not config.exists():
        raise ConvertError(f"{config} not found: the converter builds the model from the run's config")
    from megatron.core import parallel_state

    from bitcpm.backends import cpu
    from bitcpm.config.load import load_job
    from bitcpm.models import build_model
    from bitcpm.quant.converter import convert_to_ternary

    job = load_job(config)
    step = int(shards[0]["step"])
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    cpu.after_process_group()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1)
    model = build_model(job.model, seq_length=job.train.seq_length, tp=1, dtype=job.hardware.dtype, device="cpu")
    convert_to_ternary(model, job.quant)
    weights, moments = _full_state(model, shards)
    model.load_state_dict(weights)
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW([params[name] for name in moments])  # only its state is written
    for name, entry in moments.items():
        optimizer.state[params[name]] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in entry.items()}
    torch.set_rng_state(shards[0]["rng"]["torch"])
    extra = {k: shards[0].get(k) for k in ("step", "nan_skips", "consumed_samples", "mlflow_run_id", "config")}
    kept = ckpt_dir.parent / f"legacy_{ckpt_dir.name}"
    os.replace(ckpt_dir, kept)
    try:
        ckpt.save_checkpoint(run_dir, step, [model], optimizer, extra, keep=0)
    except BaseException:
        ckpt.discard(ckpt.temporary_dir(run_dir, step))
        os.replace(kept, ckpt_dir)
        raise
    finally:
        parallel_state.destroy_model_parallel()
    return kept


def _legacy_argument(value: str) -> Path:
    check_legacy(Path(value))
    return Path(value)


LEGACY_CHECKPOINT = Kind("legacy_checkpoint", _legacy_argument)
"""A checkpoint directory of an earlier bitcpm version (shard_tpXX_pp00.pt files)."""


def parser() -> argparse.ArgumentParser:
    """The command line; every directory is checked as it is read, before the first conversion."""
    p = OneLineParser(prog="python -m bitcpm.training.convert_checkpoint", description=__doc__.splitlines()[0])
    p.add_argument(
        "checkpoints", nargs="+", type=LEGACY_CHECKPOINT, help="OLD_CHECKPOINT_DIR (RUN_DIR/checkpoints/step_N)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI: convert each checkpoint directory given."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    for path in args.checkpoints:
        try:
            kept = convert(path)
        except (ConvertError, FileNotFoundError) as exc:
            print(f"bitcpm: error: {exc}", file=sys.stderr)
            return 2
        print(f"bitcpm: converted {path} to the torch_dist format (old files kept in {kept})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
