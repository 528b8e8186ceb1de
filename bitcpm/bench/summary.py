"""Numbers of a BF16-vs-QAT bench: per-measurement throughput, medians, spread, overheads and the table.

Pure Python (no torch): the measuring code hands over seconds, steps and peak bytes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bitcpm.training.qat_overhead import BF16_VARIANT, QAT_VARIANT, qat_overhead


@dataclass(frozen=True)
class Measurement:
    """One timed block of optimizer steps of one variant."""

    variant: str
    repeat: int
    seconds: float
    steps: int
    peak_memory_bytes: int | None
    cpu_seconds: float | None = None
    """CPU time this process used over the timed steps (what the host, not a device, spent)."""


@dataclass(frozen=True)
class Rates:
    """How fast the hardware turned tokens into model FLOPs in one measurement."""

    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_device: float
    tflops_per_device: float
    mfu: float | None


@dataclass(frozen=True)
class Workload:
    """What one optimizer step does, and the peak it is measured against."""

    tokens_per_step: int
    world_size: int
    flops_per_token: int
    peak_tflops: float | None

    def rates(self, m: Measurement) -> Rates:
        """Rates of one measurement; MFU only when the device's peak is known (never a guess)."""
        step = m.seconds / m.steps
        tps = self.tokens_per_step / step
        per_device = tps / self.world_size
        tflops = per_device * self.flops_per_token / 1e12
        mfu = tflops / self.peak_tflops if self.peak_tflops else None
        return Rates(step, tps, per_device, tflops, mfu)


@dataclass
class VariantSummary:
    """Every measurement of one variant and their medians."""

    variant: str
    label: str
    rates: list[Rates]
    peak_memory_bytes: list[int | None]
    cpu_seconds_per_step: list[float | None] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        """Median of one Rates field over the repeats (None when it is unknown)."""
        values = [getattr(r, name) for r in self.rates]
        return None if any(v is None for v in values) else statistics.median(values)

    @property
    def spread(self) -> float:
        """(max - min) / median of tokens/s: how much the repeats disagree."""
        values = [r.tokens_per_s for r in self.rates]
        return (max(values) - min(values)) / statistics.median(values)

    @property
    def peak_memory_gb(self) -> float | None:
        """Largest peak over the repeats, in GB (1e9 bytes)."""
        known = [b for b in self.peak_memory_bytes if b is not None]
        return max(known) / 1e9 if known else None

    def metrics(self) -> dict[str, float]:
        """Medians under the metric names training runs use (unknown values left out)."""
        out = {
            "tokens_per_s": self.median("tokens_per_s"),
            "tokens_per_s_per_device": self.median("tokens_per_s_per_device"),
            "tflops_per_device": self.median("tflops_per_device"),
            "mfu": self.median("mfu"),
            "step_time_s": self.median("step_time_s"),
            "peak_memory_gb": self.peak_memory_gb,
            "tokens_per_s_spread": self.spread,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class BenchResult:
    """Both variants and what they say about QAT's cost."""

    bf16: VariantSummary
    qat: VariantSummary
    memory_per_variant: bool
    """False where the backend's peak cannot be reset between variants (CPU: process peak RSS)."""
    notes: list[str] = field(default_factory=list)
    compute_on_host: bool = False
    """True for hardware.device=cpu: process CPU time then measures the compute itself."""

    @property
    def qat_overhead(self) -> float:
        """1 - median QAT tokens/s / median BF16 tokens/s."""
        return qat_overhead(self.qat.median("tokens_per_s"), self.bf16.median("tokens_per_s"))  # type: ignore[arg-type]

    @property
    def paired_overheads(self) -> list[float]:
        """Overhead of each repeat against the BF16 measurement taken next to it."""
        return [
            qat_overhead(q.tokens_per_s, b.tokens_per_s) for q, b in zip(self.qat.rates, self.bf16.rates, strict=True)
        ]

    @property
    def memory_overhead(self) -> float | None:
        """QAT peak / BF16 peak - 1, where peaks are per variant."""
        b, q = self.bf16.peak_memory_gb, self.qat.peak_memory_gb
        if not self.memory_per_variant or b is None or q is None:
            return None
        return q / b - 1.0

    @property
    def cpu_time_overhead(self) -> float | None:
        """1 - median BF16 CPU seconds per step / median QAT ones: on a CPU device, robust to other load.

        Wall time on a shared CPU machine swings with whatever else runs; the CPU time the process itself
        used does not (with one intra-op thread). Only meaningful when the host does the compute.
        """
        if not self.compute_on_host:
            return None
        b, q = self.bf16.cpu_seconds_per_step, self.qat.cpu_seconds_per_step
        if not b or not q or any(v is None for v in b + q):
            return None
        return 1.0 - statistics.median(b) / statistics.median(q)  # type: ignore[type-var]

    def parent_metrics(self) -> dict[str, float]:
        """What the parent MLflow run records."""
        paired = self.paired_overheads
        out = {
            "qat_overhead": self.qat_overhead,
            "qat_overhead_paired_min": min(paired),
            "qat_overhead_paired_max": max(paired),
            "memory_overhead": self.memory_overhead,
            "qat_overhead_cpu_time": self.cpu_time_overhead,
        }
        return {k: v for k, v in out.items() if v is not None}


def summarize(
    measurements: list[Measurement],
    workload: Workload,
    qat_label: str,
    memory_per_variant: bool,
    compute_on_host: bool = False,
) -> BenchResult:
    """Group measurements by variant (in repeat order) and attach the rates."""

    def variant(name: str, label: str) -> VariantSummary:
        mine = sorted((m for m in measurements if m.variant == name), key=lambda m: m.repeat)
        cpu = [None if m.cpu_seconds is None else m.cpu_seconds / m.steps for m in mine]
        return VariantSummary(name, label, [workload.rates(m) for m in mine], [m.peak_memory_bytes for m in mine], cpu)

    bf16, qat = variant(BF16_VARIANT, "bf16 (quant=none)"), variant(QAT_VARIANT, qat_label)
    return BenchResult(bf16, qat, memory_per_variant, compute_on_host=compute_on_host)


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def format_table(result: BenchResult) -> str:
    """A fixed-width table of both variants and the overheads."""
    width = max(len(v.label) for v in (result.bf16, result.qat)) + 2
    header = f"{'variant':<{width}}{'tokens/s/dev':>14}{'spread':>9}{'TFLOP/s/dev':>13}{'MFU':>8}{'peak GB':>10}"
    lines = [header, "-" * len(header)]
    for v in (result.bf16, result.qat):
        lines.append(
            f"{v.label:<{width}}{_fmt(v.median('tokens_per_s_per_device'), ',.1f'):>14}{_fmt(v.spread, '.1%'):>9}"
            f"{_fmt(v.median('tflops_per_device'), '.3f'):>13}{_fmt(v.median('mfu'), '.1%'):>8}"
            f"{_fmt(v.peak_memory_gb, '.2f'):>10}"
        )
    paired = result.paired_overheads
    lines.append(
        f"QAT overhead: {result.qat_overhead:.2%} (median of {len(paired)} repeats; paired range "
        f"{min(paired):.2%} .. {max(paired):.2%})"
    )
    memory = result.memory_overhead
    lines.append(
        f"QAT memory overhead: {memory:+.2%}"
        if memory is not None
        else "QAT memory overhead: n/a (peak memory is a process-wide high-water mark on this backend)"
    )
    cpu_time = result.cpu_time_overhead
    if cpu_time is not None:
        lines.append(f"QAT overhead by process CPU time: {cpu_time:.2%} (insensitive to other load on this machine)")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
