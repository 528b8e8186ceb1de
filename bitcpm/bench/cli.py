"""`python -m bitcpm.bench key=value ...`: QAT throughput overhead against a matched BF16 run.

Takes the same Hydra overrides as `bitcpm.train`. The composed job is the QAT variant (its quant group
must be ternary); the BF16 variant is the same job with quant=none. Both are built and timed back to back
in this one process with the training worker's own code (backend, parallel state, model, ternary converter,
optimizer, train_step), `bench.repeats` times each in ABBA order, and reported as medians:

    tokens/s per device, model TFLOP/s per device (bitcpm.plan.flops_per_token), MFU against
    hardware.peak_tflops (none when the peak is unknown), peak memory, and
    qat_overhead = 1 - QAT tokens/s / BF16 tokens/s.

Token batches are random by default (bench.synthetic_data): the work of a dense model's step does not
depend on token values, and no data preparation is needed. Several ranks: start it under torchrun
(`torchrun --nproc-per-node 8 -m bitcpm.bench ...`); rank 0 prints and records.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from bitcpm.bench.summary import BenchResult
from bitcpm.config.derived import tokens_per_step
from bitcpm.config.root import JobConfig
from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import compose_job, one_line_error, parse_command_line


def check_bench(job: JobConfig) -> None:
    """The bench compares against a quantizer and times at least one step per repeat."""
    b = job.bench
    if not job.quant.enabled:
        raise ConfigError("quant=none: the bench compares BF16 with a quantizer; pick one, e.g. quant=ternary_g128")
    for key, value, low in (
        ("bench.warmup_steps", b.warmup_steps, 0),
        ("bench.timed_steps", b.timed_steps, 1),
        ("bench.repeats", b.repeats, 1),
    ):
        if value < low:
            raise ConfigError(f"{key}={value}: must be >= {low}")


@dataclass
class BenchOutcome:
    """A finished bench as seen by one rank."""

    result: BenchResult
    key: str
    """bitcpm.training.qat_overhead.bench_key of the job on this hardware."""
    device: str
    world_size: int
    is_main: bool


def order(repeat: int) -> tuple[str, str]:
    """ABBA: BF16 first on even repeats, QAT first on odd ones, so a linear drift cancels in the medians."""
    from bitcpm.training.qat_overhead import BF16_VARIANT, QAT_VARIANT

    return (BF16_VARIANT, QAT_VARIANT) if repeat % 2 == 0 else (QAT_VARIANT, BF16_VARIANT)


def run_bench(job: JobConfig, say=print) -> BenchOutcome:
    """Measure both variants, alternating, on this process's rank."""
    from bitcpm.backends import get_backend
    from bitcpm.bench.measure import bf16_job, dataset_batches, measure, reset_peak_memory, synthetic_batches
    from bitcpm.bench.summary import Workload, summarize
    from bitcpm.plan import flops_per_token
    from bitcpm.quant.kernels import resolve_kernel
    from bitcpm.training.distributed import init_distributed, shutdown_distributed
    from bitcpm.training.qat_overhead import BF16_VARIANT, QAT_VARIANT, bench_key, device_name

    backend = get_backend(job.hardware.device)
    backend.prepare()
    p = job.parallel
    info = init_distributed(backend, job.hardware.dist_backend, p.tp, p.pp, p.cp, job.train.seed, p.virtual_pp)
    say = say if info.is_main else (lambda *_a, **_k: None)
    try:
        jobs = {QAT_VARIANT: job, BF16_VARIANT: bf16_job(job)}
        batches = (synthetic_batches if job.bench.synthetic_data else dataset_batches)(job, info)
        device = device_name(job.hardware.device)
        say(f"bitcpm bench: {job.model.name} on {info.world_size} x {device}, seq {job.train.seq_length}, ", end="")
        say(f"micro {p.micro_batch_size} x global {p.global_batch_size}, {job.bench.repeats} repeats", flush=True)
        measurements = []
        for repeat in range(job.bench.repeats):
            for variant in order(repeat):
                m = measure(jobs[variant], variant, repeat, info, backend, batches)
                cpu = f" ({m.cpu_seconds / m.steps * 1e3:.1f} ms CPU time)" if info.device.type == "cpu" else ""
                say(f"  repeat {repeat} {variant:>4}: {m.seconds / m.steps * 1e3:9.1f} ms/step{cpu}", flush=True)
                measurements.append(m)
        workload = Workload(
            tokens_per_step=tokens_per_step(job),
            world_size=info.world_size,
            flops_per_token=flops_per_token(job.model, job.train.seq_length),
            peak_tflops=job.hardware.peak_tflops,
        )
        q = job.quant
        kernel = resolve_kernel(q.kernel, info.device.type)
        label = f"qat ({q.label}, {kernel}{', cached' if q.cache else ''})"
        result = summarize(
            measurements,
            workload,
            label,
            memory_per_variant=reset_peak_memory(info.device),
            compute_on_host=info.device.type == "cpu",
        )
        result.notes += _notes(job)
        return BenchOutcome(result, bench_key(job, info.world_size, device), device, info.world_size, info.is_main)
    finally:
        shutdown_distributed()


def _notes(job: JobConfig) -> list[str]:
    notes = ["synthetic token batches" if job.bench.synthetic_data else "batches from the configured data"]
    if job.hardware.peak_tflops is None:
        notes.append(f"no MFU: hardware={job.hardware.name} has no known peak_tflops")
    return notes


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bitcpm.bench`."""
    from bitcpm.backends.megatron_notices import hide_known_warnings

    hide_known_warnings()
    args = sys.argv[1:] if argv is None else argv
    cmd = parse_command_line(args)
    if cmd.multirun or cmd.hydra_only:
        print("bitcpm bench: error: takes key=value overrides only (no -m, --cfg, --help)", file=sys.stderr)
        return 2
    try:
        job = compose_job(cmd, cmd.overrides)
        check_bench(job)
    except Exception as exc:  # composition errors of every kind become one line, no traceback
        print(f"bitcpm bench: error: {one_line_error(exc)}", file=sys.stderr)
        return 2
    from bitcpm.bench.measure import bf16_job
    from bitcpm.bench.record import log_bench
    from bitcpm.bench.summary import format_table

    out = run_bench(job)
    if not out.is_main:
        return 0
    print(format_table(out.result), flush=True)
    run_id = log_bench(job, bf16_job(job), out.result, key=out.key, device=out.device, world_size=out.world_size)
    if run_id:
        from bitcpm.tracking.store_uri import resolve_experiment

        experiment = resolve_experiment(job.tracking.experiment)
        print(f"bitcpm bench: recorded in MLflow experiment '{experiment}', parent run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
