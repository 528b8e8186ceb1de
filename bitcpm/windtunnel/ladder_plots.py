"""The ladder's pictures: loss against training compute per precision with the fitted laws and the held-out target,
and the ternary-to-full-precision gap against model size."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitcpm.windtunnel.figures import pyplot, save
from bitcpm.windtunnel.ladder_fit import LawFit, gap
from bitcpm.windtunnel.lr_curves import Estimate

FULL = "none"
"""The full-precision quantizer label: the gap's reference."""


@dataclass
class Target:
    """The held-out run a ladder predicts: its size and budget, the predictions and (once trained) the actual losses."""

    width: int
    n: float
    d: float
    flops_per_token: float
    predicted: dict[str, Estimate]
    actual: dict[str, float | None] = field(default_factory=dict)


def _by_width(points: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for p in sorted(points, key=lambda p: (p["width"], p["tokens"])):
        out.setdefault(p["width"], []).append(p)
    return out


def _predicted(ax, x: float, est: Estimate, label: str) -> None:
    """The target's prediction: a point with its 95% interval where it has one."""
    if est.low is not None and est.high is not None:
        yerr = [[est.value - est.low], [est.high - est.value]]
        ax.errorbar([x], [est.value], yerr=yerr, fmt="ko", capsize=4, label=f"{label}, 95%")
    else:
        ax.plot([x], [est.value], "ko", label=label)


def plot_loss_vs_compute(fits: dict[str, LawFit], points: dict[str, list[dict]], target: Target, path: Path) -> Path:
    """One panel per precision: the ladder's points and fitted law per width against FLOPs, the target predicted
    (with its interval) and, once trained, its actual loss."""
    plt = pyplot()
    labels = list(fits)
    fig, axes = plt.subplots(1, len(labels), figsize=(6.5 * len(labels), 4.8), squeeze=False)
    all_d = [p["tokens"] for pts in points.values() for p in pts]
    ds = np.geomspace(min(all_d) / 1.5, max(max(all_d), target.d) * 1.5, 60)
    for ax, label in zip(axes.flat, labels, strict=True):
        fit = fits[label]
        for width, pts in _by_width(points[label]).items():
            fpt, n = pts[0]["flops_per_token"], pts[0]["n"]
            line = ax.plot(fpt * ds, fit.law(n, ds), lw=1, alpha=0.8)[0]
            ax.scatter(
                [fpt * p["tokens"] for p in pts], [p["loss"] for p in pts], color=line.get_color(), label=f"w{width}"
            )
        ax.plot(target.flops_per_token * ds, fit.law(target.n, ds), "k--", lw=1, label=f"w{target.width} (fit)")
        x = target.flops_per_token * target.d
        _predicted(ax, x, target.predicted[label], "predicted")
        actual = target.actual.get(label)
        if actual is not None:
            ax.plot([x], [actual], "r*", markersize=14, label="held-out run")
        ax.set(xscale="log", xlabel="training FLOPs", ylabel="final validation loss", title=label)
        ax.legend(fontsize=8)
    fig.suptitle("ladder: loss against compute, fitted L(N, D) per precision")
    return save(fig, path)


def plot_gap_vs_n(fits: dict[str, LawFit], points: dict[str, list[dict]], target: Target, path: Path) -> Path | None:
    """The ternary-minus-full-precision loss gap against N: measured at each ladder size and budget, the fitted gap
    at those budgets and at the target's (with its bootstrap band), the target's prediction and actual gap."""
    quantized = [label for label in fits if label != FULL]
    if FULL not in fits or not quantized:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(quantized), figsize=(6.5 * len(quantized), 4.8), squeeze=False)
    full = fits[FULL]
    sizes = [p["n"] for p in points[FULL]]
    ns = np.geomspace(min(sizes) / 1.5, max(max(sizes), target.n) * 1.5, 60)
    budgets = sorted({p["tokens"] for p in points[FULL]})
    for ax, label in zip(axes.flat, quantized, strict=True):
        fit = fits[label]
        measured = {(p["width"], p["tokens"]): p for p in points[FULL]}
        for d in budgets:
            line = ax.plot(ns, fit.law(ns, d) - full.law(ns, d), lw=1, label=f"fit, D={d:,.0f}")[0]
            pairs = [
                (measured[(p["width"], d)]["n"], p["loss"] - measured[(p["width"], d)]["loss"])
                for p in points[label]
                if p["tokens"] == d and (p["width"], d) in measured
            ]
            if pairs:
                ax.scatter(*zip(*pairs, strict=True), color=line.get_color())
        if target.d not in budgets:
            ax.plot(ns, fit.law(ns, target.d) - full.law(ns, target.d), "k--", lw=1, label=f"fit, D={target.d:,.0f}")
        if fit.replicates and full.replicates:
            count = min(len(fit.replicates), len(full.replicates))
            band = fit.curve(ns, target.d)[:count] - full.curve(ns, target.d)[:count]
            low, high = np.percentile(band, [2.5, 97.5], axis=0)
            ax.fill_between(ns, low, high, color="k", alpha=0.1, label="fit's 95% band")
        _predicted(ax, target.n, gap(fit, full, target.n, target.d), f"w{target.width} predicted")
        actual, actual_full = target.actual.get(label), target.actual.get(FULL)
        if actual is not None and actual_full is not None:
            ax.plot([target.n], [actual - actual_full], "r*", markersize=14, label="held-out runs")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="loss gap (nats)", title=f"{label} - {FULL}")
        ax.legend(fontsize=8)
    fig.suptitle("ladder: ternary-to-full-precision gap against N")
    return save(fig, path)
