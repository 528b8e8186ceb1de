"""The lr x width acceptance's verdict on hand-made studies: each side's slope of log2 lr* against log2 width,
with its interval, against the criteria fixed in acceptance.py."""

from __future__ import annotations

import math

import pytest

from bitcpm.windtunnel.acceptance import MUP_MAX_ABS_SLOPE, SP_MAX_SLOPE, verdict
from bitcpm.windtunnel.lr_curves import Trial

pytestmark = pytest.mark.quick

LRS = [1.25e-3 * 2**i for i in range(7)]
WIDTHS = (32, 64, 128, 256)


def _study(parameterization: str, slope: float, lrs: list[float] = LRS) -> list[Trial]:
    """Parabolic loss curves in log lr whose optimum moves by 2**slope per doubling of width; 3 noisy seeds."""
    out = []
    for k, w in enumerate(WIDTHS):
        opt = 1e-2 * 2 ** (slope * k)
        for i, lr in enumerate(lrs):
            for seed in range(3):
                loss = 3.0 + 0.2 * (math.log(lr) - math.log(opt)) ** 2 + 0.003 * math.sin(3.1 * i + 1.3 * seed + w)
                out.append(Trial(f"{w}-{lr}-{seed}", w, lr, loss, parameterization, "none", "pretrain", seed))
    return out


def test_transfer_shown_when_mup_stays_and_sp_moves() -> None:
    lines, passed = verdict({"mup": _study("mup", 0.0), "sp": _study("sp", -0.8)})
    assert passed and lines[-1] == "acceptance: muP keeps the optimal lr across widths; sp moves it."
    mup_line = next(line for line in lines if line.startswith("mup: slope"))
    assert "[" in mup_line and mup_line.endswith("yes")  # the slope comes with its interval
    assert len([line for line in lines if line[:6].strip().isdigit()]) == len(WIDTHS)


@pytest.mark.parametrize(
    ("mup_slope", "sp_slope", "failing"),
    [
        (MUP_MAX_ABS_SLOPE + 0.25, -0.8, "mup: slope"),
        (-(MUP_MAX_ABS_SLOPE + 0.25), -0.8, "mup: slope"),
        (0.0, SP_MAX_SLOPE + 0.3, "sp: slope"),
    ],
)
def test_either_side_failing_is_said_with_its_numbers(mup_slope: float, sp_slope: float, failing: str) -> None:
    lines, passed = verdict({"mup": _study("mup", mup_slope), "sp": _study("sp", sp_slope)})
    assert not passed and lines[-1].startswith("acceptance: this scale does not show")
    assert any(line.startswith(failing) and line.endswith("NO") for line in lines)


def test_an_optimum_outside_the_grid_is_named() -> None:
    lines, _ = verdict({"mup": _study("mup", 0.0, LRS[3:]), "sp": _study("sp", -0.8)})
    assert any(line.startswith("mup: width 32: the best lr") and "grid's edge" in line for line in lines)
