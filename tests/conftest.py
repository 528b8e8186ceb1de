"""Shared fixtures (a prepared-data cache, megatron state) and every test's time bound, set by its tier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.warm_python import WarmPython

REPO = Path(__file__).resolve().parents[1]

# Each test's time bound (pytest-timeout), by tier: a hang fails that one test, with its name, instead of eating
# CI. A few times the slowest measured test of the tier (BENCHMARKS.md, test suite), fixture set-up included;
# a test that needs more says so itself with @pytest.mark.timeout(seconds).
TIER_TIMEOUT_S = {"quick": 60, "integration": 240, "slow": 600}
TIER_MARKERS = tuple(TIER_TIMEOUT_S)


def tier_of(item: pytest.Item) -> str:
    """The tier a test runs in: its own or its module's marker, the heaviest one winning."""
    for tier in ("slow", "integration"):
        if item.get_closest_marker(tier):
            return tier
    return "quick"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("timeout", None) is not None:  # --timeout on the command line bounds every test
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUT_S[tier_of(item)]))


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared copy of the built-in corpus for the whole session (preparation is cached by hash)."""
    return tmp_path_factory.mktemp("data_cache")


_WARM = WarmPython()


@pytest.fixture(scope="session", autouse=True)
def _close_warm_python():
    yield
    _WARM.close()


def run_module(
    module: str, args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None, fresh: bool = False
) -> subprocess.CompletedProcess:
    """`python -m module args` in a fresh process (a new user's command), output captured as text.

    The process is forked from a helper that has torch and megatron imported already (tests/support/warm_python.py),
    which saves their import time per run; fresh=True starts a brand-new interpreter instead.
    """
    full_env = {**os.environ, **(env or {})}
    if not fresh:
        return _WARM.run(module, list(args), cwd, full_env, timeout)
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def run_train(
    args: list[str], cwd: Path, data_cache: Path, timeout: int = 300, env: dict | None = None, fresh: bool = False
) -> subprocess.CompletedProcess:
    """`python -m bitcpm.train args` in a fresh process, with the session's data cache and cwd/out as output root."""
    full = [*args, f"data.cache_dir={data_cache}", f"train.output_root={cwd}/out"]
    return run_module("bitcpm.train", full, cwd, timeout=timeout, env=env, fresh=fresh)


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
