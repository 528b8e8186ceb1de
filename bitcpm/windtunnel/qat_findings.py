"""BitCPM's QAT findings as claims a small study can test: each study's arms (the swept value) with their losses over
seeds, differences paired by seed (same initialisation, same data order, same full-precision run), the verdict
against the paper's claim by rules fixed here before any run, the markdown table and the picture.

Claims (sweeps/group_size.yaml, qat_lr.yaml, qat_fraction.yaml; sources in README, "QAT findings"):
- group size, BitCPM-CANN Table 7: loss g32 < g64 < per-channel;
- QAT lr, BitCPM-CANN Table 6: 1e-2 below both 5e-3 and 1.5e-2;
- QAT-token fraction, BitCPM4: QAT from a full-precision run with >= 40% of the tokens ends as low as QAT from
  scratch (sweeps/qat_scratch.yaml).

Rules. An ordering claim "a < b" is the per-seed difference loss(b) - loss(a): a mean above 0 whose 95% Student t
interval lies above 0 *reproduces* it; every mean above 0 with some interval reaching 0 is *the same order, within
noise*; any mean at or below 0 does *not reproduce* it. An equivalence claim "f ~ scratch" is the per-seed relative
difference loss(f) / loss(scratch) - 1 against a margin of EQUIVALENCE_MARGIN: every interval inside +-margin
reproduces it, every mean inside with some interval crossing the margin is within noise, any mean outside does not.
An arm with fewer than two seeds leaves its claim *not judged*. A finding's verdict is its weakest claim's.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

EQUIVALENCE_MARGIN = 0.01
"""|loss(f) / loss(scratch) - 1| that still counts as "about the same loss": 1% (fixed before the first run; the
paper's own group-size and lr effects at 0.5B are 0.7-1.6%)."""
REPRODUCED, WITHIN_NOISE, NOT_REPRODUCED = "reproduced", "same direction, within noise", "not reproduced"
NOT_JUDGED = "not judged (an arm has fewer than two seeds)"
VERDICTS = (NOT_REPRODUCED, NOT_JUDGED, WITHIN_NOISE, REPRODUCED)
"""Weakest first: a finding's verdict is its weakest claim's."""

# Student t 0.975 quantiles for 1..30 degrees of freedom (a 95% two-sided interval); beyond, a Cornish-Fisher series.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
_T975 += (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("a t interval needs at least two paired seeds")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Difference:
    """A per-seed difference's mean with its 95% t interval over the seeds both arms have."""

    mean: float
    low: float
    high: float
    seeds: int

    def text(self, percent: bool = False) -> str:
        """'+0.0123 [+0.0050, +0.0196]' (or in percent)."""
        if percent:
            return f"{100 * self.mean:+.2f}% [{100 * self.low:+.2f}%, {100 * self.high:+.2f}%]"
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired(first: dict[int, float], second: dict[int, float], relative: bool = False) -> Difference | None:
    """second - first per seed (relative: second / first - 1), None with fewer than two shared seeds."""
    seeds = sorted(set(first) & set(second))
    if len(seeds) < 2:
        return None
    diffs = [second[s] / first[s] - 1 if relative else second[s] - first[s] for s in seeds]
    mean = statistics.fmean(diffs)
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return Difference(mean, mean - half, mean + half, len(diffs))


@dataclass(frozen=True)
class Finding:
    """A paper's claim over one study's arms."""

    name: str
    title: str
    key: str
    """The swept key whose value is the arm (its override in the study's trial runs)."""
    arms: tuple[str, ...]
    """The arms in the order of the table (values as the study writes them)."""
    claim: str
    source: str
    lower: tuple[tuple[str, str], ...] = ()
    """Ordering claims: (a, b) means loss(a) < loss(b)."""
    equal_to_baseline: tuple[str, ...] = ()
    """Equivalence claims: these arms end as low as the baseline (within EQUIVALENCE_MARGIN)."""
    baseline: str | None = None
    """The study holding the baseline arm ('QAT from scratch'), with its key and value."""
    baseline_key: str = "quant"
    baseline_arm: str = ""

    def label(self, arm: str) -> str:
        """How an arm reads in tables."""
        return LABELS.get(arm, arm)


LABELS = {"ternary_g32": "g32", "ternary_g64": "g64", "ternary_g128": "g128", "ternary_channel": "per-channel"}

FINDINGS = {
    "group_size": Finding(
        "group_size",
        "Group size",
        "quant",
        ("ternary_g32", "ternary_g64", "ternary_g128", "ternary_channel"),
        "loss g32 < g64 < per-channel (0.5B: decay loss 1.635 / 1.646 / 1.661)",
        "BitCPM-CANN Table 7",
        lower=(("ternary_g32", "ternary_g64"), ("ternary_g64", "ternary_channel")),
    ),
    "qat_lr": Finding(
        "qat_lr",
        "QAT learning rate",
        "stage.lr",
        ("0.005", "0.01", "0.015"),
        "QAT lr 1e-2 beats 5e-3 and 1.5e-2 (0.5B: decay loss 1.646 against 1.661; 1.5e-2 degraded)",
        "BitCPM-CANN Table 6",
        lower=(("0.01", "0.005"), ("0.01", "0.015")),
    ),
    "qat_fraction": Finding(
        "qat_fraction",
        "QAT-token fraction",
        "study.qat_fraction",
        ("0.2", "0.4", "0.6", "0.8"),
        "QAT from a full-precision run with >= 40% of the tokens ends as low as QAT from scratch",
        "BitCPM4 (MiniCPM4 technical report)",
        equal_to_baseline=("0.4", "0.6", "0.8"),
        baseline="qat_scratch",
        baseline_arm="ternary_g64",
    ),
}


def arm_value(value: str) -> str:
    """An override's value as an arm: numbers in one spelling (5e-3 and 0.005 are one arm)."""
    try:
        return repr(float(value))
    except ValueError:
        return value


@dataclass
class Result:
    """A finding's arms (arm -> seed -> loss), its baseline's, and the verdict."""

    finding: Finding
    arms: dict[str, dict[int, float]]
    baseline: dict[int, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    verdict: str = NOT_JUDGED


def _ordering(result: Result) -> None:
    levels = []
    for a, b in result.finding.lower:
        label = f"{result.finding.label(a)} < {result.finding.label(b)}"
        d = paired(result.arms.get(arm_value(a), {}), result.arms.get(arm_value(b), {}))
        if d is None:
            result.lines.append(f"{label}: fewer than two seeds in both arms, not judged")
            levels.append(NOT_JUDGED)
            continue
        level = REPRODUCED if d.low > 0 else WITHIN_NOISE if d.mean > 0 else NOT_REPRODUCED
        levels.append(level)
        result.lines.append(f"{label}: loss difference {d.text()} over {d.seeds} seeds: {level}")
    result.verdict = _weakest(levels)


def _equivalence(result: Result) -> None:
    levels, m = [], EQUIVALENCE_MARGIN
    for arm in result.finding.arms:
        d = paired(result.baseline, result.arms.get(arm_value(arm), {}), relative=True)
        label = f"{result.finding.label(arm)} against scratch"
        if d is None:
            result.lines.append(f"{label}: fewer than two shared seeds, not judged")
            if arm in result.finding.equal_to_baseline:
                levels.append(NOT_JUDGED)
            continue
        if arm not in result.finding.equal_to_baseline:
            result.lines.append(f"{label}: {d.text(percent=True)} (not part of the claim)")
            continue
        inside = -m <= d.low and d.high <= m
        level = REPRODUCED if inside else WITHIN_NOISE if abs(d.mean) <= m else NOT_REPRODUCED
        levels.append(level)
        result.lines.append(f"{label}: {d.text(percent=True)} over {d.seeds} seeds (margin +-{100 * m:g}%): {level}")
    result.verdict = _weakest(levels)


def _weakest(levels: list[str]) -> str:
    return min(levels, key=VERDICTS.index) if levels else NOT_JUDGED


def judge(finding: Finding, arms: dict[str, dict[int, float]], baseline: dict[int, float] | None = None) -> Result:
    """The finding's verdict over the measured arms (arm_value -> seed -> final loss)."""
    result = Result(finding, arms, baseline or {})
    if finding.lower:
        _ordering(result)
    else:
        _equivalence(result)
    return result


def _mean_std(losses: dict[int, float]) -> str:
    values = list(losses.values())
    if not values:
        return "n/a"
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{spread}"


def table(result: Result) -> list[str]:
    """Markdown rows: each arm's mean ± std over seeds, the seeds' losses, the difference to the reference."""
    f = result.finding
    reference, name = _reference(result)
    rows = [
        f"| {f.title.lower()} | final val loss (mean ± std) | seeds | per seed | vs {name} (paired, 95% CI) |",
        "|---|---|---|---|---|",
    ]
    arms = [*f.arms, *([] if not f.baseline else ["scratch"])]
    for arm in arms:
        losses = result.baseline if arm == "scratch" else result.arms.get(arm_value(arm), {})
        d = paired(reference, losses, relative=bool(f.baseline)) if losses is not reference else None
        diff = d.text(percent=bool(f.baseline)) if d is not None else "—"
        seeds = ", ".join(f"{losses[s]:.4f}" for s in sorted(losses))
        label = "from scratch" if arm == "scratch" else f.label(arm)
        rows.append(f"| {label} | {_mean_std(losses)} | {len(losses)} | {seeds} | {diff} |")
    return rows


def markdown(result: Result) -> str:
    """The finding's section: claim, table, paired differences, verdict."""
    f = result.finding
    lines = [f"## {f.title} (`{f.name}`)", "", f"Claim ({f.source}): {f.claim}.", "", *table(result), ""]
    lines += [f"- {line}" for line in result.lines]
    lines += ["", f"**Verdict: {result.verdict}.**", ""]
    return "\n".join(lines)


def _reference(result: Result) -> tuple[dict[int, float], str]:
    """The losses every arm is compared with, and their name: the baseline, else the first claim's lower arm."""
    f = result.finding
    if f.baseline:
        return result.baseline, "QAT from scratch"
    return result.arms.get(arm_value(f.lower[0][0]), {}), f.label(f.lower[0][0])


def plot(result: Result, path: Path) -> Path:
    """Left: each seed's loss per arm, a line per seed (what the pairing cancels); right: each arm's paired
    difference to the reference with its 95% interval (and the baseline's margin for an equivalence claim)."""
    from bitcpm.windtunnel.figures import pyplot, save

    plt = pyplot()
    f = result.finding
    reference, name = _reference(result)
    relative = bool(f.baseline)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [f.label(a) for a in f.arms] + (["scratch"] if relative else [])
    columns = [result.arms.get(arm_value(a), {}) for a in f.arms] + ([result.baseline] if relative else [])
    seeds = sorted({s for c in columns for s in c})
    for k, seed in enumerate(seeds):
        xs = [i for i, c in enumerate(columns) if seed in c]
        left.plot(xs, [columns[i][seed] for i in xs], "o-", color=f"C{k}", lw=1, ms=4, label=f"seed {seed}")
    for i, c in enumerate(columns):
        if len(c) > 1:
            mean, std = statistics.fmean(c.values()), statistics.stdev(c.values())
            left.errorbar([i + 0.08], [mean], yerr=[std], fmt="_", color="0.5", elinewidth=0.8, ms=12, zorder=1)
    left.set_xticks(range(len(labels)), labels)
    left.set_ylabel("final validation loss")
    left.set_title("per seed (bars: mean ± std)", fontsize=9)
    left.legend(fontsize=7)
    scale = 100 if relative else 1
    for i, arm in enumerate(f.arms):
        d = paired(reference, result.arms.get(arm_value(arm), {}), relative=relative)
        if d is not None and result.arms.get(arm_value(arm)) is not reference:
            err = [[scale * (d.mean - d.low)], [scale * (d.high - d.mean)]]
            right.errorbar([i], [scale * d.mean], yerr=err, fmt="o", color="C0", capsize=5)
    right.axhline(0, color="0.3", lw=1)
    if relative:
        margin = 100 * EQUIVALENCE_MARGIN
        right.axhspan(-margin, margin, color="C1", alpha=0.15, label=f"±{margin:g}% (the claim's margin)")
        right.legend(fontsize=7)
    right.set_xticks(range(len(f.arms)), labels[: len(f.arms)])
    right.set_ylabel(f"paired difference to {name}" + (" (%)" if relative else " (loss)"))
    right.set_title("mean over seeds, 95% t interval", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel(f.title)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{f.name}: {result.verdict}", fontsize=10)
    return save(fig, path, dpi=110)
