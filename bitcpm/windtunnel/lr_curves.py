"""A study's trials as loss against lr per width: best and fitted optimum lr, the plot and the markdown table.

What `python -m bitcpm.windtunnel report STUDY` draws and writes; report_command.py reads the runs from MLflow
into these trials, and acceptance.py compares two studies' optima with them.

The study is the parent run tagged bitcpm.study=STUDY; its trials are its child runs
(bitcpm.tracking.client.children). Each trial's params are its full config, its metrics the validation
losses (final_val_loss when the driver wrote one, else the last val_loss).
"""

from __future__ import annotations

import math
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
    """(series, width) -> sorted (lr, loss); a series is the parameterization, plus quant and stage when they vary."""
    several = len({(t.quant, t.stage) for t in trials}) > 1
    curves: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for t in trials:
        series = f"{t.parameterization} {t.quant} {t.stage}" if several else t.parameterization
        curves[(series, t.width)].append((t.lr, t.loss))
    return {k: sorted(v) for k, v in sorted(curves.items())}


def plot_transfer(trials: list[Trial], title: str, path: Path) -> Path:
    """Loss against lr, one line per width, one panel per parameterization (the muP transfer picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = lr_curves(trials)
    params = sorted({p for p, _ in curves})
    fig, axes = plt.subplots(1, len(params), figsize=(6 * len(params), 4.5), squeeze=False)
    for ax, par in zip(axes.flat, params, strict=True):
        for (p, width), pts in curves.items():
            if p != par:
                continue
            (line,) = ax.plot([lr for lr, _ in pts], [loss for _, loss in pts], marker="o", label=f"width {width}")
            lr_best, loss_best = min(pts, key=lambda x: x[1])
            ax.plot([lr_best], [loss_best], marker="*", markersize=14, color=line.get_color())
        ax.set(xscale="log", xlabel="base learning rate", ylabel="validation loss", title=par)
        # Tick the grid itself: a log axis labels its minor ticks too, and they overlap on a 2x grid.
        grid = sorted({lr for (p, _), pts in curves.items() if p == par for lr, _ in pts})
        ax.minorticks_off()
        ax.set_xticks(grid, [f"{lr:g}" for lr in grid])
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


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
    for (par, width), pts in lr_curves(trials).items():
        lr_best, loss_best = min(pts, key=lambda x: x[1])
        fit = fitted_optimum(pts)
        fit_text = f"{fit:.3g}" if fit is not None else "n/a"
        rows.append([par, str(width), f"{lr_best:.3g}", f"{loss_best:.4f}", fit_text, str(len(pts))])
    lines += _table(["series", "width", "best lr", "loss", "fitted optimum lr", "lrs tried"], rows)
    lines += ["", "Fitted optimum: a quadratic in log lr through the best point and two grid neighbours each side.", ""]
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
