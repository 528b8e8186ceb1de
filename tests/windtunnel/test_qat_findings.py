"""The QAT findings' verdict rules (qat_findings.py) on arms whose answer is known: each level of an ordering claim and
of an equivalence claim, the t interval, arm spellings, the table and the picture."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from bitcpm.windtunnel.qat_findings import (
    EQUIVALENCE_MARGIN,
    FINDINGS,
    NOT_JUDGED,
    NOT_REPRODUCED,
    REPRODUCED,
    WITHIN_NOISE,
    arm_value,
    judge,
    markdown,
    paired,
    plot,
    t975,
)

pytestmark = pytest.mark.quick

SEEDS = (1, 2, 3)


def _arm(base: float, *noise: float) -> dict[int, float]:
    return {s: base + n for s, n in zip(SEEDS, noise or (0.0, 0.0, 0.0), strict=True)}


def test_the_t_quantiles_are_student_s() -> None:
    assert t975(2) == pytest.approx(4.303)
    assert t975(30) == pytest.approx(2.042)
    assert t975(60) == pytest.approx(2.000, abs=2e-3)  # the series beyond the table
    assert t975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="two paired seeds"):
        t975(0)


def test_a_paired_difference_cancels_what_the_seeds_share() -> None:
    first = {1: 3.0, 2: 3.5, 3: 4.0}  # seeds far apart ...
    second = {1: 3.01, 2: 3.512, 3: 4.008}  # ... the same shift in each
    d = paired(first, second)
    assert d is not None and d.seeds == 3 and d.mean == pytest.approx(0.01)
    half = t975(2) * statistics.stdev([0.01, 0.012, 0.008]) / 3**0.5
    assert (d.low, d.high) == (pytest.approx(0.01 - half), pytest.approx(0.01 + half))
    assert d.low > 0  # while the arms' own spreads overlap by far
    relative = paired({1: 2.0, 2: 4.0}, {1: 2.02, 2: 4.04}, relative=True)
    assert relative is not None and relative.mean == pytest.approx(0.01) and relative.low == pytest.approx(0.01)
    assert paired({1: 1.0}, {1: 2.0, 2: 3.0}) is None  # one shared seed: no interval


GROUPS = FINDINGS["group_size"]


@pytest.mark.parametrize(
    ("channel_shift", "noise", "verdict"),
    [
        (0.02, (0.0, 0.001, -0.001), REPRODUCED),  # clearly above, every seed
        (0.002, (0.0, 0.02, -0.015), WITHIN_NOISE),  # above on average, the interval reaches 0
        (-0.01, (0.0, 0.001, -0.001), NOT_REPRODUCED),  # per-channel better than g64
    ],
)
def test_an_ordering_claim_has_three_verdicts(channel_shift: float, noise: tuple, verdict: str) -> None:
    arms = {
        "ternary_g32": _arm(3.00, 0.0, 0.05, 0.1),
        "ternary_g64": _arm(3.01, 0.0, 0.05, 0.1),
        "ternary_channel": _arm(3.01 + channel_shift, *(n + m for n, m in zip((0.0, 0.05, 0.1), noise, strict=True))),
    }
    result = judge(GROUPS, arms)
    assert result.verdict == verdict
    assert result.lines[0].startswith("g32 < g64: loss difference +0.0100")


def test_a_missing_arm_is_not_judged_but_a_contradiction_still_counts() -> None:
    arms = {"ternary_g32": _arm(3.0), "ternary_g64": _arm(3.1, 0.0, 0.01, 0.0)}
    assert judge(GROUPS, arms).verdict == NOT_JUDGED
    arms["ternary_g64"] = _arm(2.9, 0.0, 0.01, 0.0)  # g64 below g32: refuted whatever per-channel does
    assert judge(GROUPS, arms).verdict == NOT_REPRODUCED


def test_the_qat_lr_claim_names_its_arms_as_the_sweep_writes_them() -> None:
    assert arm_value("5e-3") == arm_value("0.005") == "0.005" and arm_value("ternary_g32") == "ternary_g32"
    arms = {arm_value(v): _arm(loss, 0.0, 0.001, 0.002) for v, loss in (("5e-3", 3.05), ("1e-2", 3.0), ("1.5e-2", 3.2))}
    result = judge(FINDINGS["qat_lr"], arms)
    assert result.verdict == REPRODUCED, result.lines


FRACTION = FINDINGS["qat_fraction"]


@pytest.mark.parametrize(
    ("offsets", "verdict"),
    [
        ((0.001, -0.002, 0.0), REPRODUCED),  # within 1% with tight intervals
        ((0.009, 0.0, 0.0), WITHIN_NOISE),  # f = 0.4 inside on average, its interval crosses the margin
        ((0.03, 0.0, 0.0), NOT_REPRODUCED),  # f = 0.4 3% worse than scratch
    ],
)
def test_an_equivalence_claim_has_three_verdicts(offsets: tuple, verdict: str) -> None:
    scratch = _arm(3.0, 0.0, 0.1, 0.2)
    jitter = (0.0, 0.004, -0.004) if verdict == WITHIN_NOISE else (0.0, 0.0005, -0.0005)
    arms = {"0.2": {s: v * 1.05 for s, v in scratch.items()}}  # f = 0.2 is reported, not judged
    for f, offset in zip(("0.4", "0.6", "0.8"), offsets, strict=True):
        arms[f] = {s: v * (1 + offset + j) for (s, v), j in zip(scratch.items(), jitter, strict=True)}
    result = judge(FRACTION, arms, scratch)
    assert result.verdict == verdict, result.lines
    assert result.lines[0] == "0.2 against scratch: +5.00% [+5.00%, +5.00%] (not part of the claim)"
    assert f"(margin +-{100 * EQUIVALENCE_MARGIN:g}%)" in result.lines[1]


def test_the_report_shows_means_spreads_seeds_and_the_picture(tmp_path: Path) -> None:
    arms = {
        "ternary_g32": {1: 3.0, 2: 3.1},
        "ternary_g64": {1: 3.02, 2: 3.12},
        "ternary_g128": {1: 3.03, 2: 3.13},
        "ternary_channel": {1: 3.05, 2: 3.15},
    }
    result = judge(GROUPS, arms)
    text = markdown(result)
    assert "| g32 | 3.0500 ± 0.0707 | 2 | 3.0000, 3.1000 | — |" in text
    assert "| per-channel | 3.1000 ± 0.0707 | 2 | 3.0500, 3.1500 | +0.0500 [+0.0500, +0.0500] |" in text
    assert "BitCPM-CANN Table 7" in text and f"**Verdict: {REPRODUCED}.**" in text
    png = plot(result, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
