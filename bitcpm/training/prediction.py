"""A predicted final loss that a run carries as tags (a scaling ladder's target run), and the actual loss beside it.

`python -m bitcpm.windtunnel predict LADDER --experiment NAME` writes tracking.tags with one prediction per
precision (quant label); the worker, at the end, logs the one of its own quantizer next to its final validation
loss: `predicted_loss` (with `predicted_loss_low` / `_high`, the 95% interval), `prediction_error` (actual minus
predicted, relative to the prediction) and `prediction_inside` (1 when the actual loss lies in the interval).
"""

from __future__ import annotations

from collections.abc import Mapping

PREDICTED = "bitcpm.predicted_loss."
LOW = "bitcpm.predicted_low."
HIGH = "bitcpm.predicted_high."


def prediction_tags(label: str, value: float, low: float | None, high: float | None) -> dict[str, str]:
    """The tags that carry one precision's prediction (label: the quantizer's label, e.g. none, ternary_g64)."""
    tags = {PREDICTED + label: f"{value:.6g}"}
    if low is not None and high is not None:
        tags |= {LOW + label: f"{low:.6g}", HIGH + label: f"{high:.6g}"}
    return tags


def prediction_metrics(tags: Mapping[str, str], label: str, loss: float) -> dict[str, float]:
    """The prediction for quantizer `label` beside the actual final `loss`; empty when the run carries none."""
    if PREDICTED + label not in tags:
        return {}
    predicted = float(tags[PREDICTED + label])
    out = {"predicted_loss": predicted, "prediction_error": (loss - predicted) / predicted}
    if LOW + label in tags and HIGH + label in tags:
        low, high = float(tags[LOW + label]), float(tags[HIGH + label])
        out |= {"predicted_loss_low": low, "predicted_loss_high": high, "prediction_inside": float(low <= loss <= high)}
    return out


def prediction_line(metrics: Mapping[str, float], loss: float) -> str:
    """One line for the run's output."""
    line = f"bitcpm: predicted final loss {metrics['predicted_loss']:.4f}"
    if "predicted_loss_low" in metrics:
        line += f" [{metrics['predicted_loss_low']:.4f}, {metrics['predicted_loss_high']:.4f}]"
        inside = "inside" if metrics["prediction_inside"] else "OUTSIDE"
    else:
        inside = ""
    return f"{line}, actual {loss:.4f}: error {100 * metrics['prediction_error']:+.2f}%" + (
        f", {inside} the interval" if inside else ""
    )
