"""What `bitcpm.eval` evaluates: an HF export directory, or a bitcpm run / checkpoint exported on the fly.

Either way it ends as an HF `llama`-layout directory for the harness plus where to log: the training run's
config (tracking settings) and MLflow run id, found through the export's bitcpm_source.json when the
target is an export.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bitcpm.config.root import JobConfig


@dataclass
class Target:
    """An evaluable export and the run it came from (None for a foreign HF checkpoint)."""

    hf_dir: Path
    label: str
    job: JobConfig | None
    run_dir: Path | None
    mlflow_run_id: str | None
    temporary: bool = False
    """hf_dir was exported for this evaluation into a temporary directory (removed afterwards)."""


def _from_export(path: Path) -> Target:
    from bitcpm.config.load import load_job
    from bitcpm.export.hf import SOURCE_RECORD

    record_file = path / SOURCE_RECORD
    if not record_file.is_file():
        return Target(hf_dir=path, label=path.name, job=None, run_dir=None, mlflow_run_id=None)
    record = json.loads(record_file.read_text(encoding="utf-8"))
    run_dir = Path(record["run_dir"])
    job = load_job(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    return Target(hf_dir=path, label=run_dir.name, job=job, run_dir=run_dir, mlflow_run_id=record.get("mlflow_run_id"))


def check_sources(*paths: str | Path | None) -> None:
    """The checkpoints of the bitcpm runs among paths match their manifests (before the harness indexes its
    tasks and anything is exported); a damaged one is one line naming its file."""
    from bitcpm.export.source import resolve
    from bitcpm.models.minicpm.hf_checkpoint import is_hf_checkpoint

    for path in paths:
        if path is not None and not is_hf_checkpoint(path):
            resolve(path)


def resolve_target(path: str | Path, export_dir: str | None, verified: bool = False) -> Target:
    """An HF export as is; a bitcpm run or checkpoint exported (llama layout, fp32) and verified first (its files
    against its manifest too, unless `verified`: check_sources did)."""
    from bitcpm.models.minicpm.hf_checkpoint import is_hf_checkpoint

    if is_hf_checkpoint(path):
        return _from_export(Path(path))
    from bitcpm.export.hf import verify_hf, write_hf
    from bitcpm.export.source import open_source

    source = open_source(path, verified=verified)
    out = Path(export_dir) if export_dir else Path(tempfile.mkdtemp(prefix="bitcpm-eval-")) / source.run_dir.name
    write_hf(source, out, "llama", "fp32")
    check = verify_hf(out, source)
    print(f"eval: exported {source.run_dir.name} to {out}: {check.line()}", flush=True)
    if check.max_abs_diff > 1e-3:
        raise ValueError(f"eval: the export of {path} does not reproduce bitcpm's logits ({check.line()})")
    return Target(
        hf_dir=out,
        label=source.run_dir.name,
        job=source.job,
        run_dir=source.run_dir,
        mlflow_run_id=source.mlflow_run_id,
    )


def baseline_spec(path: str | Path, baseline: str | None) -> str | None:
    """What baseline= names, read before anything is exported: `auto` is the target's stage.init_from (checked to
    be a run or Hugging Face directory); None without a baseline."""
    if baseline != "auto":
        return baseline
    from bitcpm.export.inputs import run_job, run_or_hf
    from bitcpm.models.minicpm.hf_checkpoint import is_hf_checkpoint

    job = _from_export(Path(path)).job if is_hf_checkpoint(path) else run_job(path)[1]
    if job is None or not job.stage.init_from:
        raise ValueError("baseline=auto: the target has no stage.init_from to compare with; pass baseline=RUN")
    try:
        run_or_hf(job.stage.init_from)
    except ValueError as exc:
        raise ValueError(f"baseline=auto: the target's stage.init_from: {exc}") from None
    return job.stage.init_from
