"""The report's pieces on hand-made trials: fitted optimum, best lr per width, group-size and QAT-lr tables."""

from __future__ import annotations

import math

import pytest

from bitcpm.windtunnel.lr_curves import Trial, fitted_optimum, markdown, series_fits

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
    assert "| mup none pretrain | 128 | 0.02 (grid edge) | 2.9000 |" in text  # the best lr may lie beyond the grid
    assert "| mup g32 qat | 64 | 0.01 (grid edge) | 3.0500 |" in text
    assert "| g32 | 3.0500 | 0.01 | 64 |" in text and "| channel | 3.2500 |" in text
    assert "| 0.005 | 3.1500 | g32 |" in text and "| 0.01 | 3.0500 | g32 |" in text
    assert "(1 without)" in text


def test_markdown_says_what_was_not_varied() -> None:
    text = markdown("s", [_trial(64, 1e-2, 3.0), _trial(64, 2e-2, 3.1)], skipped=0)
    assert "Not varied in this study (all trials: quant none)" in text
    assert "no QAT trials at several learning rates" in text


def _seeded(par: str, optimum_per_width: dict[int, float], noise: float, seeds: int = 3) -> list[Trial]:
    """Parabolic loss curves in log lr around each width's optimum, with a seed-dependent offset per point."""
    lrs = [1.25e-3 * 2**i for i in range(7)]
    out = []
    for w, opt in optimum_per_width.items():
        for i, lr in enumerate(lrs):
            for seed in range(seeds):
                wiggle = noise * math.sin(1.7 * i + 2.3 * seed + w)
                loss = 3.0 + 0.2 * (math.log(lr) - math.log(opt)) ** 2 + wiggle
                out.append(Trial(f"{w}-{lr}-{seed}", w, lr, loss, par, "none", "pretrain", seed))
    return out


def test_slope_of_the_optimum_against_width_with_its_interval() -> None:
    flat = {32: 1e-2, 64: 1e-2, 128: 1e-2, 256: 1e-2}
    falling = {32: 1e-2 * 2**-0.0, 64: 1e-2 * 2**-0.7, 128: 1e-2 * 2**-1.4, 256: 1e-2 * 2**-2.1}
    fits = series_fits(_seeded("mup", flat, 0.01) + _seeded("sp", falling, 0.01))
    mup_optima, mup_slope = fits["mup"]
    sp_optima, sp_slope = fits["sp"]
    assert mup_slope.value == pytest.approx(0.0, abs=0.1) and sp_slope.value == pytest.approx(-0.7, abs=0.1)
    for estimate in (mup_slope, sp_slope, *mup_optima.values(), *sp_optima.values()):
        assert estimate.low <= estimate.value <= estimate.high  # a bootstrap interval around the point estimate
    assert mup_slope.high - mup_slope.low < 0.5
    # More seed noise, a wider interval.
    noisy = series_fits(_seeded("mup", flat, 0.05))["mup"][1]
    assert noisy.high - noisy.low > mup_slope.high - mup_slope.low


def test_one_seed_per_point_has_no_interval_and_the_table_says_the_spread() -> None:
    one = series_fits(_seeded("mup", {32: 1e-2, 256: 1e-2}, 0.0, seeds=1))["mup"][1]
    assert one.low is None and one.text(".2f") == f"{one.value:.2f}"
    text = markdown("s", _seeded("mup", {32: 1e-2, 64: 1e-2}, 0.02), skipped=0)
    assert "| mup | 32 | 0.01 | " in text and " ± " in text and "| 7 | 3 |" in text
    assert "slope of log2 lr* per doubling of width" in text


def test_the_plot_draws_each_width_with_its_seed_spread(tmp_path) -> None:
    import matplotlib.image

    from bitcpm.windtunnel.lr_curves import plot_transfer

    trials = _seeded("mup", {32: 1e-2, 64: 1e-2}, 0.02) + _seeded("sp", {32: 1e-2, 64: 5e-3}, 0.02)
    png = plot_transfer(trials, "t", tmp_path / "p.png")
    assert matplotlib.image.imread(png).shape[1] > matplotlib.image.imread(png).shape[0]  # two panels side by side
