"""Times one variant of a job with the training worker's own engine (bitcpm.training.build) and train_step.

Each measurement builds the variant from scratch (same seed, so both variants start from the same weights),
runs warm-up steps, times `timed_steps` optimizer steps between two device synchronisations, reads the
peak memory and frees everything before the other variant is built, so peaks never mix on a GPU.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from bitcpm.bench.summary import Measurement
from bitcpm.config.bench import BenchConfig
from bitcpm.config.parallel import derive_layout
from bitcpm.config.root import JobConfig
from bitcpm.training.distributed import DistInfo

BatchSource = Callable[[int], list[torch.Tensor]]


def bf16_job(job: JobConfig) -> JobConfig:
    """The same job without quantization: the matched full-precision baseline."""
    return replace(job, quant=replace(job.quant, method="none"))


def synthetic_batches(job: JobConfig, info: DistInfo) -> BatchSource:
    """Random token blocks of the training shape; the same blocks every step (values do not change the work)."""
    p = job.parallel
    micro_per_step = derive_layout(p, info.world_size).micro_batches_per_step
    gen = torch.Generator().manual_seed(job.train.seed + info.dp_rank)
    shape = (p.micro_batch_size, job.train.seq_length + 1)
    blocks = [
        torch.randint(0, job.model.vocab_size, shape, generator=gen).to(info.device) for _ in range(micro_per_step)
    ]
    return lambda step: blocks


def dataset_batches(job: JobConfig, info: DistInfo) -> BatchSource:
    """This rank's micro-batches of the configured data, in training order."""
    from bitcpm.training.data import build_training_data

    p = job.parallel
    data = build_training_data(job.data, job.train.seq_length, info.is_main, job.model.vocab_size)
    micro_per_step = derive_layout(p, info.world_size).micro_batches_per_step

    def batches(step: int) -> list[torch.Tensor]:
        first = step * p.global_batch_size
        starts = [first + (i * info.dp_size + info.dp_rank) * p.micro_batch_size for i in range(micro_per_step)]
        return [data.train_micro_batch(s, p.micro_batch_size).to(info.device) for s in starts]

    return batches


def reset_peak_memory(device: torch.device) -> bool:
    """Restart the device's peak-memory counter; False where it cannot be reset (CPU: the process's peak RSS)."""
    module = getattr(torch, device.type, None)
    if device.type == "cpu" or module is None or not hasattr(module, "reset_peak_memory_stats"):
        return False
    module.reset_peak_memory_stats()
    return True


def _release(device: torch.device) -> None:
    gc.collect()
    module = getattr(torch, device.type, None)
    if device.type != "cpu" and module is not None and hasattr(module, "empty_cache"):
        module.empty_cache()


def _build(job: JobConfig, info: DistInfo):
    """The training worker's own engine (bitcpm.training.build): the same spec, converter, DDP and optimizer."""
    from bitcpm.training.build import build_engine

    torch.manual_seed(job.train.seed)
    return build_engine(job, info.world_size, job.optim.lr)


def _steps(engine, batches: BatchSource, first: int, count: int, variant: str) -> None:
    from bitcpm.training.steps import train_step

    for step in range(first, first + count):
        result = train_step(engine, batches(step))
        if not result.finite:
            raise FloatingPointError(f"bench {variant}: non-finite loss {result.loss} at step {step}")


def measure(job: JobConfig, variant: str, repeat: int, info: DistInfo, backend, batches: BatchSource) -> Measurement:
    """Build `job` as given, warm up, time bench.timed_steps optimizer steps."""
    bench: BenchConfig = job.bench
    _release(info.device)
    reset_peak_memory(info.device)
    engine = _build(job, info)
    _steps(engine, batches, 0, bench.warmup_steps, variant)
    backend.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    _steps(engine, batches, bench.warmup_steps, bench.timed_steps, variant)
    backend.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = backend.peak_memory_bytes()
    del engine
    _release(info.device)
    return Measurement(variant, repeat, seconds, bench.timed_steps, peak, cpu_seconds)
