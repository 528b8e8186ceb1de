"""The coordinate check passes for MiniCPM's muP and fails for the standard parameterization."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_module

pytestmark = pytest.mark.integration

SMALL = ["--widths", "64,128,256,512", "--head-dim", "32", "--steps", "8", "model.num_layers=2", "tracking=none"]


def coordcheck(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    args = ["coordcheck", "--out", str(tmp_path / "cc"), *SMALL, *args]
    return run_module("bitcpm.windtunnel", args, tmp_path, env={"OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("quant", ["none", "ternary_g32"])
def test_mup_passes_and_sp_fails_naming_the_layer(tmp_path: Path, quant: str) -> None:
    mup = coordcheck(tmp_path, f"quant={quant}", "model.parameterization=mup")
    assert mup.returncode == 0, mup.stdout + mup.stderr
    assert "coordcheck: passed" in mup.stdout
    sp = coordcheck(tmp_path, f"quant={quant}", "model.parameterization=sp")
    assert sp.returncode == 1, sp.stdout + sp.stderr
    error = [line for line in sp.stdout.splitlines() if line.startswith("coordcheck: error:")]
    assert len(error) == 1
    slopes = json.loads((tmp_path / "cc" / "coord_check.json").read_text())["slopes"]
    worst = max(slopes, key=lambda d: abs(d["slope"]))
    assert error[0].startswith(f"coordcheck: error: {worst['name']} drifts with width")
    assert worst["slope"] > 0.3  # sp grows with width: hidden matrices are not rescaled
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
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"coord_check.png", "coord_check.json"}


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    too_few = coordcheck(tmp_path, "--widths", "64,128")
    assert too_few.returncode == 2 and "at least 4 widths" in too_few.stderr.strip().splitlines()[-1]
    bad_key = coordcheck(tmp_path, "model.parameterization=muP")
    assert bad_key.returncode == 2
    assert bad_key.stderr.strip().splitlines()[-1].endswith("model.parameterization=muP: expected one of mup, sp")
