"""The ladder's law fit on synthetic points: a known law comes back, predictions extrapolate with intervals that cover,
the gap between two precisions, and the target run's prediction tags as the worker reads them."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bitcpm.training.prediction import prediction_line, prediction_metrics, prediction_tags
from bitcpm.windtunnel.ladder_fit import Law, Point, check_points, fit_law, fit_with_bootstrap, gap

pytestmark = pytest.mark.quick

FULL = Law(1.8, 60.0, 0.35, 400.0, 0.30)
TERNARY = Law(1.9, 95.0, 0.35, 420.0, 0.30)  # a worse constant and size term: the gap shrinks with N
SIZES = (1e5, 2e5, 4e5, 8e5)
TOKENS = (1e5, 2e5, 4e5)


def _points(law: Law, noise: float = 0.0, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [Point(n, d, float(law(n, d)) * (1 + noise * rng.standard_normal())) for n in SIZES for d in TOKENS]


def test_an_exact_law_comes_back() -> None:
    law = fit_law(_points(FULL))
    assert law.alpha == pytest.approx(FULL.alpha, abs=0.01)
    assert law.beta == pytest.approx(FULL.beta, abs=0.01)
    assert law.e == pytest.approx(FULL.e, rel=0.02)
    assert float(law(3.2e6, 8e5)) == pytest.approx(float(FULL(3.2e6, 8e5)), rel=1e-3)  # far outside the ladder
    assert law.at_edge() == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_noisy_ladder_predicts_a_larger_size_and_its_interval_covers(seed: int) -> None:
    fit = fit_with_bootstrap(_points(FULL, noise=0.004, seed=seed), replicates=200, seed=seed)
    n, d = 1.6e6, 4e5  # twice the largest size at the largest budget: where a held-out run goes
    est, truth = fit.predict(n, d), float(FULL(n, d))
    assert est.low is not None and est.high is not None
    assert est.low <= truth <= est.high
    assert abs(est.value / truth - 1) < 0.03
    assert est.high - est.low < 0.1 * truth  # an interval that says something
    assert 0.001 < fit.rms_residual < 0.01


def test_the_gap_between_precisions_has_its_sign_size_and_interval() -> None:
    full = fit_with_bootstrap(_points(FULL, 0.003, seed=3), replicates=200, seed=1)
    ternary = fit_with_bootstrap(_points(TERNARY, 0.003, seed=4), replicates=200, seed=2)
    for n in (2e5, 1.6e6):
        est, truth = gap(ternary, full, n, 4e5), float(TERNARY(n, 4e5) - FULL(n, 4e5))
        assert est.low is not None and est.high is not None and est.low <= truth <= est.high
        assert est.value == pytest.approx(truth, abs=0.03)
    assert gap(ternary, full, 1.6e6, 4e5).value < gap(ternary, full, 2e5, 4e5).value  # shrinks with N


def test_without_replicates_there_is_no_interval() -> None:
    fit = fit_with_bootstrap(_points(FULL), replicates=0)
    assert fit.predict(1e6, 4e5).low is None
    assert gap(fit, fit, 1e6, 4e5).text() == "0"


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (_points(FULL)[:5], "5 finished point(s)"),
        ([Point(1e5, d, 3.0 + d * 1e-6) for d in (1e5, 2e5, 3e5, 4e5, 5e5, 6e5)], "at 1 size(s)"),
        ([Point(n, 1e5, 3.0 + n * 1e-6) for n in (1e5, 2e5, 3e5, 4e5, 5e5, 6e5)], "and 1 token budget(s)"),
    ],
)
def test_too_few_points_sizes_or_budgets_are_refused(points: list[Point], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_points(points, "ladder x")


def test_a_target_run_logs_its_own_precision_s_prediction_beside_its_loss() -> None:
    tags = {**prediction_tags("none", 3.0, 2.9, 3.1), **prediction_tags("ternary_g64", 3.3, 3.2, 3.4), "other": "x"}
    got = prediction_metrics(tags, "ternary_g64", 3.366)
    assert got["predicted_loss"] == 3.3 and got["prediction_error"] == pytest.approx(0.02)
    assert (got["predicted_loss_low"], got["predicted_loss_high"], got["prediction_inside"]) == (3.2, 3.4, 1.0)
    assert prediction_metrics(tags, "none", 3.2)["prediction_inside"] == 0.0
    assert prediction_metrics(tags, "ternary_g32", 3.0) == {}  # no prediction for this quantizer: nothing logged
    assert prediction_metrics({}, "none", 3.0) == {}
    line = prediction_line(got, 3.366)
    assert (
        line == "bitcpm: predicted final loss 3.3000 [3.2000, 3.4000], actual 3.3660: error +2.00%, inside the interval"
    )
