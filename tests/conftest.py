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
TIER_TIMEOUT_S = {"quick": 60, "integration": 300, "slow": 900}
TIER_MARKERS = tuple(TIER_TIMEOUT_S)


def tier_of(item: pytest.Item) -> str:
    """The tier a test runs in: its own or its module's marker, the heaviest one winning."""
    for tier in ("slow", "integration"):
        if item.get_closest_marker(tier):
            return tier
    return "quick"


def shared_setup_group(item: pytest.Item) -> str | None:
    """Tests that share expensive set-up (Slurm, the trained pair, a module's reference run) run on one worker."""
    if "slurm" in item.fixturenames:
        return "slurm"  # one single-node Slurm: its jobs would only queue behind each other
    if "trained_pair" in item.fixturenames:
        return "trained_pair"
    module = getattr(item, "module", None)
    for defs in item._fixtureinfo.name2fixturedefs.values():
        fixture = defs[-1]
        if fixture.scope == "module" and module is not None and fixture.func.__module__ == module.__name__:
            return module.__name__
    return None


def _run_order(item: pytest.Item) -> int:
    # Longest first, so the quick tier's many short tests fill in behind them on every worker.
    return {"slurm": 0}.get(shared_setup_group(item) or "", 1 if tier_of(item) != "quick" else 2)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("timeout", None) is None:  # --timeout on the command line bounds every test instead
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TIER_TIMEOUT_S[tier_of(item)]))
    if hasattr(config, "workerinput"):  # a pytest-xdist worker (`-n 2`): group and order for the scheduler
        for item in items:
            group = shared_setup_group(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))
        items.sort(key=_run_order)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        # Workers share the cores: one thread per worker and per run it starts (two on two cores), not two each.
        os.environ["OMP_NUM_THREADS"] = "1"


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
