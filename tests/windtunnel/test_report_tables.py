"""The report's pieces on hand-made trials: fitted optimum, best lr per width, group-size and QAT-lr tables."""

from __future__ import annotations

import math

import pytest

from bitcpm.windtunnel.lr_curves import Trial, fitted_optimum, markdown

pytestmark = pytest.mark.quick


def _trial(width: int, lr: float, loss: float, quant: str = "none", stage: str = "pretrain") -> Trial:
    return Trial(f"{width}-{lr}-{quant}-{stage}", width, lr, loss, "mup", quant, stage)


@pytest.mark.parametrize("optimum", [3e-3, 1.3e-2, 5e-2])
def test_fitted_optimum_is_the_vertex_of_a_parabola_in_log_lr(optimum: float) -> None:
    lrs = [1e-3 * 2**i for i in range(7)]
    points = [(lr, 2.0 + 0.3 * (math.log(lr) - math.log(optimum)) ** 2) for lr in lrs]
    assert fitted_optimum(points) == pytest.approx(optimum, rel=1e-6)


def test_fitted_optimum_needs_three_lrs_and_a_minimum() -> None:
    assert fitted_optimum([(1e-2, 3.0), (2e-2, 2.9)]) is None
    assert fitted_optimum([(1e-3, 3.0), (1e-2, 3.5), (1e-1, 3.0)]) is None  # a maximum, not a minimum


def test_markdown_has_best_lr_per_width_and_tables_for_what_the_study_varied() -> None:
    trials = [_trial(64, lr, loss) for lr, loss in ((5e-3, 3.2), (1e-2, 3.1), (2e-2, 3.3))]
    trials += [_trial(128, lr, loss) for lr, loss in ((5e-3, 3.0), (1e-2, 2.95), (2e-2, 2.9))]
    trials += [_trial(64, 1e-2, 3.05, quant="g32", stage="qat"), _trial(64, 5e-3, 3.15, quant="g32", stage="qat")]
    trials += [_trial(64, 1e-2, 3.25, quant="channel", stage="qat")]
    text = markdown("s", trials, skipped=1)
    assert "| mup none pretrain | 64 | 0.01 | 3.1000 |" in text  # one lr curve per quant and stage
    assert "| mup none pretrain | 128 | 0.02 | 2.9000 |" in text
    assert "| mup g32 qat | 64 | 0.01 | 3.0500 |" in text
    assert "| g32 | 3.0500 | 0.01 | 64 |" in text and "| channel | 3.2500 |" in text
    assert "| 0.005 | 3.1500 | g32 |" in text and "| 0.01 | 3.0500 | g32 |" in text
    assert "(1 without)" in text


def test_markdown_says_what_was_not_varied() -> None:
    text = markdown("s", [_trial(64, 1e-2, 3.0), _trial(64, 2e-2, 3.1)], skipped=0)
    assert "Not varied in this study (all trials: quant none)" in text
    assert "no QAT trials at several learning rates" in text
