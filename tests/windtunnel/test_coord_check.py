"""The coordinate check over widths and seeds passes for MiniCPM's muP and fails for the standard parameterization."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
from pathlib import Path

import pytest

from bitcpm.windtunnel.cli import main
from bitcpm.windtunnel.coord_measure import MAY_SHRINK, WidthRecord, drifts, excess, failures, fit_slope
from tests.conftest import run_module

pytestmark = pytest.mark.integration

# The smallest check that shows the behaviour: 4 widths 16x apart (the least a verdict accepts), 2 seeds, 2 layers.
TINY = ["--widths", "32,64,128,512", "--head-dim", "32", "--steps", "8", "--seeds", "2", "model.num_layers=2"]
NEEDS = "the coord check needs at least 4 widths spanning at least 16x (largest / smallest)"
ROW = re.compile(r"^  (activation|update) +(.+?) +slope ([+-]\d\.\d{3}) ± (\d\.\d{3}) +(ok|DRIFT)$")


def coordcheck(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    args = ["coordcheck", "--out", str(tmp_path / "cc"), *TINY, "tracking=none", *args]
    return run_module("bitcpm.windtunnel", args, tmp_path, env={"OMP_NUM_THREADS": "1"})


def table(stdout: str) -> list[tuple[str, float, float, str]]:
    """(name, slope, interval, flag) of every printed row, in printed order."""
    return [(m[2], float(m[3]), float(m[4]), m[5]) for m in map(ROW.match, stdout.splitlines()) if m]


@pytest.mark.parametrize("quant", ["none", "ternary_g32"])
def test_mup_passes_and_sp_fails_naming_the_layer(tmp_path: Path, quant: str) -> None:
    mup = coordcheck(tmp_path, f"quant={quant}", "model.parameterization=mup")
    assert mup.returncode == 0, mup.stdout + mup.stderr
    assert "coordcheck: passed" in mup.stdout
    assert "seeds [0, 1]" in mup.stdout
    sp = coordcheck(tmp_path, f"quant={quant}", "model.parameterization=sp")
    assert sp.returncode == 1, sp.stdout + sp.stderr
    error = [line for line in sp.stdout.splitlines() if line.startswith("coordcheck: error:")]
    assert len(error) == 1
    raw = json.loads((tmp_path / "cc" / "coord_check.json").read_text())
    slopes = raw["slopes"]
    worst = max(slopes, key=lambda d: abs(d["slope"]))
    assert error[0].startswith(f"coordcheck: error: {worst['name']} drifts with width")
    assert worst["slope"] > 0.3  # sp grows with width: hidden matrices are not rescaled
    # Every row has slope ± interval, worst first, and agrees with the JSON.
    rows = table(sp.stdout)
    assert len(rows) == len(slopes)
    assert rows[0][0] == worst["name"] and f"± {worst['interval']:.3f}" in error[0]
    drift = [r[1] if r[0] in MAY_SHRINK else abs(r[1]) for r in rows]
    assert drift == sorted(drift, reverse=True)
    assert [r[3] == "DRIFT" for r in rows] == [d > 0.3 for d in drift]
    # JSON: per-seed values of every width; the slope is fitted to their mean, the interval is their slopes' sd.
    assert raw["widths"] == [32, 64, 128, 512] and raw["seeds"] == [0, 1]
    assert sorted((r["seed"], r["width"]) for r in raw["records"]) == [(s, w) for s in (0, 1) for w in raw["widths"]]
    seed_values = worst["seed_values"]
    assert len(seed_values) == 2 and all(len(v) == 4 for v in seed_values)
    assert seed_values[0] != seed_values[1]  # the seeds really differ (init and batch)
    means = [(a + b) / 2 for a, b in zip(*seed_values, strict=True)]
    assert worst["slope"] == pytest.approx(fit_slope(raw["widths"], means))
    assert worst["interval"] == pytest.approx(statistics.stdev(fit_slope(raw["widths"], v) for v in seed_values))
    assert (tmp_path / "cc" / "coord_check.png").stat().st_size > 0


def test_untied_lm_head_at_init_std_passes_and_is_logged_to_mlflow(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    untied = coordcheck(tmp_path, "quant=none", "model.tie_embeddings=false", "tracking=mlflow", f"tracking.uri={uri}")
    assert untied.returncode == 0, untied.stdout + untied.stderr
    assert "output_layer.weight" in untied.stdout  # the head's own update is measured
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("bitcpm").experiment_id])
    assert run.data.tags["coordcheck.passed"] == "true"
    assert run.data.params["seeds"] == "0,1"
    assert "slope_sd.update.output_layer.weight" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"coord_check.png", "coord_check.json"}


def _record(width: int, seed: int, value: float) -> WidthRecord:
    return WidthRecord(width, seed, activations={"layers.0.mlp": [1.0, value], "logits": [1.0, 1.0 / width]})


def test_the_fit_uses_the_mean_over_seeds_and_the_spread_of_their_slopes() -> None:
    widths = [64, 128, 256, 1024]
    # Seed 0 grows as width**0.5, seed 1 is flat: the mean's slope lies between, the sd is that of (0.5, 0).
    records = [_record(w, 0, w**0.5) for w in widths] + [_record(w, 1, 1.0) for w in widths]
    mlp, logits = drifts(records)
    assert mlp.seed_slopes == pytest.approx([0.5, 0.0])
    assert mlp.slope == pytest.approx(fit_slope(widths, [(w**0.5 + 1) / 2 for w in widths]))
    assert 0 < mlp.slope < 0.5 and mlp.interval == pytest.approx(statistics.stdev([0.5, 0.0]))
    assert logits.slope == pytest.approx(-1.0) and excess(logits) == -1.0  # muP's logits may vanish at init
    assert failures([mlp, logits], tolerance=0.3) == [mlp]
    (one_seed, _) = drifts(records[:4])
    assert one_seed.interval is None and math.isclose(one_seed.slope, 0.5)
    with pytest.raises(ValueError, match="same widths"):
        drifts(records[:-1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "argument --seeds: 0: expected a value >= 1"),
        (["--widths", "64,128,256,512"], f"{NEEDS}, got 4 spanning 8x"),
        (["--widths", "32,512"], "argument --widths: 32,512: the coord check needs at least 4 widths"),
        (["model.parameterization=muP"], "model.parameterization=muP: expected one of mup, sp"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # In-process: every one of these stops before a model is built.
    try:
        code = main(["coordcheck", "--out", str(tmp_path / "cc"), *TINY, "tracking=none", *args])
    except SystemExit as stop:  # refused by an argument's kind while the command line is read
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "bitcpm.windtunnel" in err[0] and " error: " in err[0] and err[0].endswith(message), err[0]
    assert not (tmp_path / "cc").exists()
