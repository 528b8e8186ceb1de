"""Shared fixtures: a per-test working directory and a shared prepared-data cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared copy of the built-in corpus for the whole session (preparation is cached by hash)."""
    return tmp_path_factory.mktemp("data_cache")


def run_train(args: list[str], cwd: Path, data_cache: Path, timeout: int = 300, env: dict | None = None):
    """Run `python -m bitcpm.train` in a subprocess (a fresh process, as a new user would)."""
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "bitcpm.train", *args, f"data.cache_dir={data_cache}", f"train.output_root={cwd}/out"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def only_run_dir(cwd: Path) -> Path:
    """The single run directory a test created."""
    dirs = [p for p in (cwd / "out").iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def dist_cpu():
    """megatron parallel state at TP=1 over gloo in this process."""
    from bitcpm.backends import get_backend
    from bitcpm.training.distributed import init_distributed, shutdown_distributed

    backend = get_backend("cpu")
    backend.prepare()
    init_distributed(backend, "gloo", 1, 1, 1, seed=7)
    yield
    shutdown_distributed()
