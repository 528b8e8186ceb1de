"""QAT throughput overhead of a training run against a BF16 bench of the same configuration.

`python -m bitcpm.bench` tags its runs with a bench key: a hash of what sets the work per step (model,
parallel layout and batch, sequence length, dtype) plus the device type and the number of devices,
deliberately without `quant`. A QAT training run computes the same key from its own config, finds the
newest finished BF16 bench child with that key in its MLflow experiment, and logs
qat_overhead = 1 - its tokens/s per device / the bench's BF16 tokens/s per device.

Left out of the key because they do not change the per-step work: quant (that is the comparison),
stage, data (the bench may use synthetic tokens), optimizer values, steps, seed, tracking, launcher.

The training loop logs the overhead, so the key, the tags and the lookup live in training/; bench/ tags its
runs with them from above.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from typing import Any

from bitcpm.config.root import JobConfig

log = logging.getLogger(__name__)

BENCH_KEY_TAG = "bitcpm.bench_key"
BENCH_VARIANT_TAG = "bitcpm.bench_variant"
BF16_VARIANT = "bf16"
QAT_VARIANT = "qat"
PER_DEVICE_METRIC = "tokens_per_s_per_device"


def throughput_config(job: JobConfig) -> dict[str, Any]:
    """The parts of a job that set the work of one optimizer step (quant excluded)."""
    return {
        "model": asdict(job.model),
        "parallel": asdict(job.parallel),
        "seq_length": job.train.seq_length,
        "dtype": job.hardware.dtype,
        "device": job.hardware.device,
    }


def device_name(device: str) -> str:
    """What kind of accelerator this process computes on: the CUDA/NPU product name, or 'cpu'."""
    if device == "cpu":
        return "cpu"
    import torch

    module = getattr(torch, device, None)
    try:
        return str(module.get_device_name())  # type: ignore[union-attr]
    except (AttributeError, RuntimeError, AssertionError):
        return device


def bench_key(job: JobConfig, world_size: int, device: str | None = None) -> str:
    """Key of a throughput comparison: config minus quant, device type, world size.

    device: the accelerator's product name; None asks this process (device_name(hardware.device)), so a
    bench and a training run on the same kind of GPU agree whichever hardware preset named it.
    """
    blob = {
        "config": throughput_config(job),
        "device_name": device or device_name(job.hardware.device),
        "world_size": world_size,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _client(source: Any) -> Any:
    # A tracking URI, an MlflowClient, or a Tracker holding one (MlflowTracker.client); a NullTracker has none.
    if isinstance(source, str):
        from bitcpm.tracking.client import open_client

        return open_client(source)
    client = getattr(source, "client", source)
    return client if hasattr(client, "search_runs") else None


def find_bf16_bench(source: Any, experiment: str, key: str) -> float | None:
    """BF16 tokens/s per device of the newest finished bench with this key in `experiment`, or None.

    source: a tracking URI, an MlflowClient or a tracker exposing `.client`. A store that cannot be
    read gives None and a warning: the overhead metric is optional, the training run is not.
    """
    try:
        # Creating the client can already touch the store (a new sqlite file is migrated on open, which
        # races when several array members start at once), so it belongs inside the guard too.
        client = _client(source)
        if client is None:
            return None
        from bitcpm.tracking.client import find_runs

        tags = {BENCH_KEY_TAG: key, BENCH_VARIANT_TAG: BF16_VARIANT}
        runs = find_runs(client, experiment, tags, finished_only=True, max_results=1)
    except Exception as exc:  # any store failure: report it, carry on without the metric
        log.warning("no qat_overhead: could not search MLflow for a BF16 bench (%s)", exc)
        return None
    if not runs:
        return None
    return runs[0].data.metrics.get(PER_DEVICE_METRIC)


def qat_overhead(qat_tokens_per_s: float, bf16_tokens_per_s: float) -> float:
    """1 - QAT throughput / BF16 throughput (0.05 = QAT is 5% slower; negative = faster)."""
    return 1.0 - qat_tokens_per_s / bf16_tokens_per_s
