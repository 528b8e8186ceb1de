"""MLflow record of a bench: a parent run with the overheads and one child run per variant.

Children carry the bench key and variant tags that bitcpm.training.qat_overhead.find_bf16_bench searches for,
and the medians under the metric names training runs use (tokens_per_s, tokens_per_s_per_device,
tflops_per_device, mfu, peak_memory_gb); each repeat is also logged as a step of `repeat/...` metrics.
"""

from __future__ import annotations

from dataclasses import asdict

from bitcpm.bench.summary import BenchResult, VariantSummary
from bitcpm.config.root import JobConfig
from bitcpm.tracking import Tracker, open_tracker
from bitcpm.tracking.client import child_of
from bitcpm.training.qat_overhead import BENCH_KEY_TAG, BENCH_VARIANT_TAG


def _quant_tag(job: JobConfig) -> str:
    return job.quant.label


def _tags(job: JobConfig, key: str, device: str, world_size: int) -> dict[str, str]:
    return {
        "bitcpm.kind": "bench",
        BENCH_KEY_TAG: key,
        "model": job.model.name,
        "hardware": job.hardware.name,
        "device_name": device,
        "world_size": str(world_size),
        "mlflow.source.name": "bitcpm.bench",
    }


def _log_variant(tracker: Tracker, summary: VariantSummary) -> None:
    tracker.log_metrics(summary.metrics(), step=0)
    for i, rates in enumerate(summary.rates):
        series = {
            "repeat/tokens_per_s_per_device": rates.tokens_per_s_per_device,
            "repeat/step_time_s": rates.step_time_s,
        }
        tracker.log_metrics(series, step=i)


def log_bench(
    qat_job: JobConfig,
    bf16_job: JobConfig,
    result: BenchResult,
    *,
    key: str,
    device: str,
    world_size: int,
) -> str | None:
    """Record the bench unless tracking is off; returns the parent run id (None without tracking)."""
    if qat_job.tracking.backend == "none":
        return None
    tags = _tags(qat_job, key, device, world_size)
    name = f"bench-{qat_job.model.name}-{_quant_tag(qat_job)}-{qat_job.hardware.name}"
    parent = open_tracker(qat_job.tracking, run_name=name, params=asdict(qat_job), tags=tags)
    try:
        parent.log_metrics(result.parent_metrics(), step=0)
        parent.log_text("\n".join(result.notes) + "\n", "bench/notes.txt")
        for job, summary in ((bf16_job, result.bf16), (qat_job, result.qat)):
            child_tags = {**tags, **child_of(str(parent.run_id)), BENCH_VARIANT_TAG: summary.variant}
            child_tags["quant"] = _quant_tag(job)
            child = open_tracker(
                job.tracking, run_name=f"{name}/{summary.variant}", params=asdict(job), tags=child_tags
            )
            with child:
                _log_variant(child, summary)
    except BaseException:
        parent.close("FAILED")
        raise
    parent.close("FINISHED")
    return parent.run_id
