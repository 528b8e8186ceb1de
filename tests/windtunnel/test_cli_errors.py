"""Bad wind-tunnel arguments stop with one line and exit 2, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.windtunnel.cli import main

pytestmark = pytest.mark.quick


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "width=64,96"], "width 96: not a multiple of the head size 64"),
        (["--param", "optim.lr=1e-2,-1"], "optim.lr"),
        (["--param", "optim.lr=1e-2", "model.parameterization=xp"], "model.parameterization=xp"),
        (["--param", "optim.lr=2:1"], "--param optim.lr=2:1"),
    ],
)
def test_bad_grid_stops_before_any_trial(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    code = main(["search", "s", "--sampler", "grid", *args, "quant=none", "tracking=none", f"train.output_root={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_tpe_needs_a_budget(capsys) -> None:
    assert main(["search", "s", "tracking=none"]) == 2
    assert "--trials: required with --sampler tpe" in capsys.readouterr().err
