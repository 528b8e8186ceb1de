"""A debug pretrain -> ternary QAT pair, trained once per session through `python -m bitcpm.train`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_train

COMMON = ["experiment=smoke", "train.steps=4", "train.eval_interval=0", "optim.warmup_steps=1"]


@dataclass(frozen=True)
class TrainedPair:
    """Run directories of a full-precision run and its ternary (g128) QAT descendant."""

    pretrain: Path
    qat: Path
    tracking_uri: str
    """The sqlite MLflow store both runs were tracked in."""


def _single_new_dir(root: Path, before: set[Path]) -> Path:
    new = [p for p in root.iterdir() if p.is_dir() and p not in before]
    assert len(new) == 1, new
    return new[0]


@pytest.fixture(scope="session")
def trained_pair(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> TrainedPair:
    """Train the pair (a few CPU seconds each); tests must not write into the run directories."""
    cwd = tmp_path_factory.mktemp("trained_pair")
    uri = f"sqlite:///{cwd}/mlflow.db"
    tracked = [*COMMON, "tracking=mlflow", f"tracking.uri={uri}"]
    proc = run_train([*tracked, "quant=none"], cwd, data_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pretrain = _single_new_dir(cwd / "out", set())
    qat_args = [*tracked, "stage=qat", f"stage.init_from={pretrain}", "stage.tokens=null", "stage.rewarmup_steps=1"]
    proc = run_train(qat_args, cwd, data_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return TrainedPair(pretrain=pretrain, qat=_single_new_dir(cwd / "out", {pretrain}), tracking_uri=uri)


@pytest.fixture(scope="module")
def released_parallel_state():
    """For modules that open a run in-process (export.source sets up tp=1 megatron state): torn down after."""
    yield
    from bitcpm.training.distributed import shutdown_distributed

    shutdown_distributed()
