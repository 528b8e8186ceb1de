"""The lr x width acceptance's verdict on hand-made studies: the grid check decides, fitted optima only inform."""

from __future__ import annotations

import math

import pytest

from bitcpm.windtunnel.acceptance import LRS, best_lr_index, fitted_optima, verdict
from bitcpm.windtunnel.lr_curves import Trial

pytestmark = pytest.mark.quick


def _study(parameterization: str, optimum_per_width: dict[int, float]) -> list[Trial]:
    """Parabolic loss curves in log lr with the given optimum per width."""
    return [
        Trial(f"{w}-{lr}", w, lr, 3.0 + 0.2 * (math.log(lr) - math.log(opt)) ** 2, parameterization, "none", "pretrain")
        for w, opt in optimum_per_width.items()
        for lr in LRS
    ]


def _verdict(mup: dict[int, float], sp: dict[int, float]) -> list[str]:
    studies = {"mup": _study("mup", mup), "sp": _study("sp", sp)}
    idx = {p: best_lr_index(t, LRS) for p, t in studies.items()}
    return verdict(idx, LRS, {p: fitted_optima(t) for p, t in studies.items()})


def test_transfer_shown_when_mup_stays_and_sp_moves() -> None:
    lines = _verdict({64: 1e-2, 128: 1e-2, 512: 1.1e-2}, {64: 4e-2, 128: 2e-2, 512: 5e-3})
    assert lines[-1] == "acceptance: muP keeps the optimal lr across widths; sp moves it."
    assert "mup: best lr spans 0 grid point(s) across widths (expected <= 1): yes" in lines
    assert "sp: best lr spans 3 grid point(s) across widths (expected >= 2): yes" in lines
    assert lines[3].split() == ["512", "0.01", "0.005", "0.011", "0.005"]  # width, best lrs, fitted optima


@pytest.mark.parametrize(
    ("mup", "sp", "failing"),
    [
        ({64: 5e-3, 128: 1e-2, 512: 2e-2}, {64: 4e-2, 128: 2e-2, 512: 5e-3}, "mup: best lr spans 2"),
        ({64: 1e-2, 128: 1e-2, 512: 1e-2}, {64: 1e-2, 128: 5e-3, 512: 5e-3}, "sp: best lr spans 1"),
    ],
)
def test_either_side_failing_is_said_with_its_numbers(mup, sp, failing: str) -> None:
    lines = _verdict(mup, sp)
    assert lines[-1].startswith("acceptance: this scale does not show")
    assert any(line.startswith(failing) and line.endswith("NO") for line in lines)


def test_fitted_optima_are_context_in_grid_steps() -> None:
    lines = _verdict({64: 1e-2, 128: 1e-2, 512: 2e-2}, {64: 4e-2, 128: 2e-2, 512: 1e-2})
    assert "mup: fitted optima span 1.00 grid steps (context only, not the check)" in lines
    assert "sp: fitted optima span 2.00 grid steps (context only, not the check)" in lines
