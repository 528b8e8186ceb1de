"""Bench arithmetic: rates, MFU only with a known peak, medians, ABBA order, overheads, table, config checks."""

from __future__ import annotations

import pytest

from bitcpm.bench.cli import check_bench, order
from bitcpm.bench.summary import Measurement, Workload, format_table, summarize
from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import CommandLine, compose_job

pytestmark = pytest.mark.quick


def _workload(peak: float | None = 100.0) -> Workload:
    # 1000 tokens per step on 2 devices, 1e9 FLOPs per token.
    return Workload(tokens_per_step=1000, world_size=2, flops_per_token=10**9, peak_tflops=peak)


def test_rates_of_one_measurement() -> None:
    r = _workload().rates(Measurement("bf16", 0, seconds=2.0, steps=4, peak_memory_bytes=None))
    assert r.step_time_s == 0.5
    assert r.tokens_per_s == 2000 and r.tokens_per_s_per_device == 1000
    assert r.tflops_per_device == pytest.approx(1.0)  # 1000 tok/s x 1e9 FLOP = 1 TFLOP/s
    assert r.mfu == pytest.approx(0.01)


def test_no_peak_no_mfu() -> None:
    r = _workload(None).rates(Measurement("bf16", 0, 1.0, 1, None))
    assert r.mfu is None


def _measurements(bf16: list[float], qat: list[float], mem=(10**9, 2 * 10**9)) -> list[Measurement]:
    out = [Measurement("bf16", i, s, 1, mem[0]) for i, s in enumerate(bf16)]
    return out + [Measurement("qat", i, s, 1, mem[1]) for i, s in enumerate(qat)]


def test_medians_overheads_and_spread() -> None:
    result = summarize(_measurements([1.0, 1.1, 0.9], [1.25, 1.0, 1.1]), _workload(), "qat", memory_per_variant=True)
    # tokens/s: bf16 1000, 909.1, 1111.1 -> median 1000; qat 800, 1000, 909.1 -> median 909.1
    assert result.bf16.median("tokens_per_s") == pytest.approx(1000)
    assert result.qat_overhead == pytest.approx(1 - 909.0909 / 1000, rel=1e-4)
    assert result.paired_overheads == pytest.approx([0.2, 1 - 1.1 / 1.0, 1 - 0.9 / 1.1])
    assert result.bf16.spread == pytest.approx((1111.11 - 909.09) / 1000, rel=1e-4)
    assert result.memory_overhead == pytest.approx(1.0)
    metrics = result.qat.metrics()
    assert set(metrics) >= {"tokens_per_s", "tokens_per_s_per_device", "tflops_per_device", "mfu", "peak_memory_gb"}
    assert metrics["peak_memory_gb"] == pytest.approx(2.0)
    assert set(result.parent_metrics()) >= {"qat_overhead", "memory_overhead"}


def test_no_memory_overhead_when_peaks_are_process_wide() -> None:
    result = summarize(_measurements([1.0], [1.0]), _workload(None), "qat", memory_per_variant=False)
    assert result.memory_overhead is None
    assert "memory_overhead" not in result.parent_metrics() and "mfu" not in result.bf16.metrics()
    table = format_table(result)
    assert "QAT overhead: 0.00%" in table and "n/a" in table


def test_table_has_both_rows() -> None:
    result = summarize(_measurements([1.0, 1.0], [1.1, 1.1]), _workload(), "qat (ternary g128)", True)
    lines = format_table(result).splitlines()
    assert lines[2].startswith("bf16") and lines[3].startswith("qat (ternary g128)")
    assert "9.09%" in lines[4]
    assert "+100.00%" in lines[5]


def test_abba_order() -> None:
    assert [order(r) for r in range(3)] == [("bf16", "qat"), ("qat", "bf16"), ("bf16", "qat")]


def test_bench_needs_a_quantizer_and_positive_counts() -> None:
    check_bench(compose_job(CommandLine(), []))
    with pytest.raises(ConfigError, match="^quant=none: the bench compares"):
        check_bench(compose_job(CommandLine(), ["quant=none"]))
    with pytest.raises(ConfigError, match=r"^bench.timed_steps=0: expected a value >= 1$"):
        check_bench(compose_job(CommandLine(), ["bench.timed_steps=0"]))


def test_bench_section_composes_with_defaults() -> None:
    b = compose_job(CommandLine(), ["bench.repeats=5", "bench.synthetic_data=false"]).bench
    assert (b.warmup_steps, b.timed_steps, b.repeats, b.synthetic_data) == (3, 10, 5, False)


def test_cpu_time_overhead_only_when_the_host_computes() -> None:
    runs = [
        Measurement("bf16", 0, seconds=9.0, steps=2, peak_memory_bytes=None, cpu_seconds=2.0),
        Measurement("qat", 0, seconds=1.0, steps=2, peak_memory_bytes=None, cpu_seconds=2.5),
    ]
    on_cpu = summarize(runs, _workload(None), "qat", memory_per_variant=False, compute_on_host=True)
    # Wall time says QAT was 9x faster (another process stole the BF16 run's core); CPU time says 20% slower.
    assert on_cpu.qat_overhead < 0
    assert on_cpu.cpu_time_overhead == pytest.approx(0.2)
    assert on_cpu.parent_metrics()["qat_overhead_cpu_time"] == pytest.approx(0.2)
    assert "QAT overhead by process CPU time: 20.00%" in format_table(on_cpu)
    on_gpu = summarize(runs, _workload(None), "qat", memory_per_variant=True)
    assert on_gpu.cpu_time_overhead is None and "qat_overhead_cpu_time" not in on_gpu.parent_metrics()
