"""A study's trials as loss against lr per width: mean and spread over seeds, fitted optimum lr with an interval,
the slope of log2 lr* against log2 width with its interval, the plot and the markdown tables.

Fits: each (width, lr) point is the mean over its seeds; the optimum is the vertex of a quadratic in log lr through
the best mean and up to two grid neighbours each side (the grid's best when the parabola opens downwards). The
intervals are a bootstrap over seeds: each replicate resamples every point's seeds with replacement and refits,
and the interval is the replicates' 2.5-97.5 percentiles (none with one seed per point).

What `python -m bitcpm.windtunnel report STUDY` draws and writes; report_command.py reads the runs from MLflow
into these trials, and acceptance.py compares two studies' optima with them.

The study is the parent run tagged bitcpm.study=STUDY; its trials are its child runs
(bitcpm.tracking.client.children). Each trial's params are its full config, its metrics the validation
losses (final_val_loss when the driver wrote one, else the last val_loss).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Trial:
    """One finished trial as the report needs it."""

    run_id: str
    width: int
    lr: float
    loss: float
    parameterization: str
    quant: str
    stage: str
    seed: int = 0


def _quant_label(params: dict[str, str]) -> str:
    if params.get("quant.method", "none") == "none":
        return "none"
    group = int(params.get("quant.group_size", "0"))
    return "channel" if group <= 0 else f"g{group}"


def trial_of(run) -> Trial | None:
    """A Trial from an MLflow run, None when it has no finite validation loss (failed, diverged)."""
    p, m = run.data.params, run.data.metrics
    loss = m.get("final_val_loss", m.get("val_loss"))
    if loss is None or not math.isfinite(loss) or "model.hidden_size" not in p:
        return None
    stage_lr = p.get("stage.lr", "None")
    lr = float(stage_lr) if stage_lr not in ("None", "") else float(p["optim.lr"])
    return Trial(
        run.info.run_id,
        int(p["model.hidden_size"]),
        lr,
        float(loss),
        p.get("model.parameterization", "mup"),
        _quant_label(p),
        p.get("stage.name", "pretrain"),
        int(p.get("train.seed", "0")),
    )


def best_by(trials: list[Trial], key) -> dict:
    """key -> the trial with the lowest loss among those sharing it."""
    out: dict = {}
    for t in trials:
        k = key(t)
        if k not in out or t.loss < out[k].loss:
            out[k] = t
    return out


def fitted_optimum(points: list[tuple[float, float]], span: int = 2) -> float | None:
    """lr minimising a quadratic in log lr fitted to the best point and up to `span` grid neighbours each side.

    None when fewer than 3 distinct lrs are there or the fitted parabola opens downwards.
    """
    pts = sorted(points)
    if len({lr for lr, _ in pts}) < 3:
        return None
    best = min(range(len(pts)), key=lambda i: pts[i][1])
    lo, hi = max(0, best - span), min(len(pts), best + span + 1)
    window = pts[lo:hi] if hi - lo >= 3 else pts[:3] if best < 2 else pts[-3:]
    xs = [math.log(lr) for lr, _ in window]
    ys = [loss for _, loss in window]
    import numpy as np

    a, b, _ = np.polyfit(xs, ys, 2)
    if a <= 0:
        return None
    return math.exp(-b / (2 * a))


def lr_curves(trials: list[Trial]) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(series, width) -> sorted (lr, mean loss over seeds); a series is the parameterization, plus quant and stage
    when they vary."""
    return {k: [(lr, statistics.fmean(losses)) for lr, losses in v.items()] for k, v in seed_curves(trials).items()}


def seed_curves(trials: list[Trial]) -> dict[tuple[str, int], dict[float, list[float]]]:
    """(series, width) -> lr -> the losses of its seeds (lrs in ascending order)."""
    several = len({(t.quant, t.stage) for t in trials}) > 1
    curves: dict[tuple[str, int], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in sorted(trials, key=lambda t: (t.lr, t.seed)):
        series = f"{t.parameterization} {t.quant} {t.stage}" if several else t.parameterization
        curves[(series, t.width)][t.lr].append(t.loss)
    return {k: dict(sorted(v.items())) for k, v in sorted(curves.items())}


def _std(values: list[float]) -> float:
    """The seeds' sample standard deviation (0 for a single seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def best_mean_lr(by_lr: dict[float, list[float]]) -> tuple[float, bool]:
    """The lr with the lowest mean loss over seeds, and whether it sits at the grid's edge (not bracketed)."""
    means = {lr: statistics.fmean(v) for lr, v in by_lr.items()}
    best = min(means, key=means.__getitem__)
    return best, best in (min(means), max(means))


BOOTSTRAP = 1000
"""Bootstrap replicates behind every interval."""


def optimum(points: list[tuple[float, float]]) -> float:
    """The fitted optimum of (lr, mean loss) points, else the grid's best lr."""
    fit = fitted_optimum(points)
    return fit if fit is not None else min(points, key=lambda x: x[1])[0]


def _resample(curve: dict[float, list[float]], rng) -> list[tuple[float, float]]:
    return [(lr, float(rng.choice(losses, size=len(losses)).mean())) for lr, losses in curve.items()]


def slope(widths: list[int], optima: list[float]) -> float:
    """Least-squares slope of log2 lr* against log2 width (0: the optimum stays put; -1: it halves per doubling)."""
    import numpy as np

    return float(np.polyfit(np.log2(widths), np.log2(optima), 1)[0])


@dataclass(frozen=True)
class Estimate:
    """A fitted value with its bootstrap interval (None without seed repeats)."""

    value: float
    low: float | None = None
    high: float | None = None

    def text(self, fmt: str = ".3g") -> str:
        """'v [lo, hi]', or 'v' without an interval."""
        if self.low is None or self.high is None:
            return f"{self.value:{fmt}}"
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def series_fits(trials: list[Trial], seed: int = 0) -> dict[str, tuple[dict[int, Estimate], Estimate | None]]:
    """series -> (width -> optimum lr with interval, slope of log2 lr* per doubling of width with interval)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    curves = seed_curves(trials)
    out: dict[str, tuple[dict[int, Estimate], Estimate | None]] = {}
    for series in sorted({s for s, _ in curves}):
        widths = sorted(w for s, w in curves if s == series)
        per_width = {w: curves[(series, w)] for w in widths}
        point = {w: optimum([(lr, statistics.fmean(v)) for lr, v in c.items()]) for w, c in per_width.items()}
        repeated = all(len(v) > 1 for c in per_width.values() for v in c.values())
        samples: dict[int, list[float]] = {w: [] for w in widths}
        slopes: list[float] = []
        if repeated:
            for _ in range(BOOTSTRAP):
                drawn = {w: optimum(_resample(c, rng)) for w, c in per_width.items()}
                for w, v in drawn.items():
                    samples[w].append(v)
                if len(widths) > 1:
                    slopes.append(slope(widths, [drawn[w] for w in widths]))

        def interval(values: list[float], value: float) -> Estimate:
            if not values:
                return Estimate(value)
            low, high = np.percentile(values, [2.5, 97.5])
            return Estimate(value, float(low), float(high))

        optima = {w: interval(samples[w], point[w]) for w in widths}
        fitted_slope = interval(slopes, slope(widths, [point[w] for w in widths])) if len(widths) > 1 else None
        out[series] = (optima, fitted_slope)
    return out


def plot_transfer(trials: list[Trial], title: str, path: Path) -> Path:
    """Loss against lr, one line per width, one panel per parameterization (the muP transfer picture)."""
    from bitcpm.windtunnel.figures import pyplot, save

    plt = pyplot()

    curves = seed_curves(trials)
    params = sorted({p for p, _ in curves})
    fig, axes = plt.subplots(1, len(params), figsize=(6 * len(params), 4.5), squeeze=False)
    for ax, par in zip(axes.flat, params, strict=True):
        for (p, width), by_lr in curves.items():
            if p != par:
                continue
            lrs = list(by_lr)
            means = [statistics.fmean(v) for v in by_lr.values()]
            spread = [_std(v) for v in by_lr.values()]  # error bars: the seeds' standard deviation
            line = ax.errorbar(lrs, means, yerr=spread, marker="o", capsize=3, label=f"width {width}").lines[0]
            lr_best, loss_best = min(zip(lrs, means, strict=True), key=lambda x: x[1])
            ax.plot([lr_best], [loss_best], marker="*", markersize=14, color=line.get_color())
        ax.set(xscale="log", xlabel="base learning rate", ylabel="validation loss", title=par)
        # Tick the grid itself: a log axis labels its minor ticks too, and they overlap on a 2x grid.
        grid = sorted({lr for (p, _), by_lr in curves.items() if p == par for lr in by_lr})
        ax.minorticks_off()
        ax.set_xticks(grid, [f"{lr:g}" for lr in grid])
        ax.legend()
    fig.suptitle(title)
    return save(fig, path)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(study: str, trials: list[Trial], skipped: int) -> str:
    """The study's report: best lr per width, fitted optimum, group-size and QAT-lr tables."""
    lines = [
        f"# Wind tunnel study `{study}`",
        "",
        f"{len(trials)} trials with a validation loss ({skipped} without).",
        "",
    ]
    lines += ["## Best learning rate per width", ""]
    rows = []
    fits = series_fits(trials)
    for (par, width), by_lr in seed_curves(trials).items():
        means = {lr: statistics.fmean(v) for lr, v in by_lr.items()}
        lr_best, at_edge = best_mean_lr(by_lr)
        seeds = max(len(v) for v in by_lr.values())
        loss = f"{means[lr_best]:.4f}" + (f" ± {_std(by_lr[lr_best]):.4f}" if seeds > 1 else "")
        edge = " (grid edge)" if at_edge else ""
        fit = fits[par][0][width].text() if fitted_optimum(list(means.items())) is not None else "n/a"
        rows.append([par, str(width), f"{lr_best:.3g}{edge}", loss, fit, str(len(by_lr)), str(seeds)])
    lines += _table(["series", "width", "best lr", "loss", "fitted optimum lr", "lrs tried", "seeds"], rows)
    lines += [
        "",
        "Loss: mean over seeds ± their standard deviation. Fitted optimum: a quadratic in log lr through the best",
        "mean and two grid neighbours each side, with a 95% bootstrap interval over seeds.",
        "",
        "## How the optimum moves with width",
        "",
    ]
    rows = [[par, s.text(".2f")] for par, (_, s) in fits.items() if s is not None]
    if rows:
        lines += _table(["series", "slope of log2 lr* per doubling of width"], rows)
        lines += ["", "0: the optimal lr stays put (muP's promise); -1: it halves with every doubling of width.", ""]
    else:
        lines += ["One width only: no slope.", ""]
    groups = best_by(trials, lambda t: t.quant)
    lines += ["## Group size", ""]
    if len(groups) > 1:
        rows = [[q, f"{t.loss:.4f}", f"{t.lr:.3g}", str(t.width)] for q, t in sorted(groups.items())]
        lines += _table(["quant", "best loss", "at lr", "width"], rows)
    else:
        lines.append(f"Not varied in this study (all trials: quant {next(iter(groups), 'none')}).")
    qat = [t for t in trials if t.stage == "qat"]
    lines += ["", "## QAT learning rate", ""]
    if len({t.lr for t in qat}) > 1:
        rows = [[f"{lr:.3g}", f"{t.loss:.4f}", t.quant] for lr, t in sorted(best_by(qat, lambda t: t.lr).items())]
        lines += _table(["QAT lr", "best loss", "quant"], rows)
    else:
        lines.append("Not varied in this study (no QAT trials at several learning rates).")
    return "\n".join(lines) + "\n"
