"""constraints-lowest.txt pins exactly the lower bound of every core dependency pyproject.toml declares.

Core: the base install, the extras CI's lowest-versions job installs (LOWEST_EXTRAS) and its test runner
(pytest, and pytest-timeout, which every test's time bound needs).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]
# torch's lowest CPU build is not on the index CI installs from (see the file's header).
EXEMPT = {"torch"}
LOWEST_EXTRAS = ("slurm", "ui")
TEST_RUNNER = ("pytest", "pytest-timeout")


def _declared() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runner = [r for r in extras["dev"] if Requirement(r).name in TEST_RUNNER]
    requirements = [*project["dependencies"], *(r for name in LOWEST_EXTRAS for r in extras[name]), *runner]
    floors: dict[str, Version] = {}
    for line in requirements:
        req = Requirement(line)
        lower = [s.version for s in req.specifier if s.operator in (">=", "==")]
        assert lower, f"{line}: every dependency declares a lower bound"
        floors[canonicalize_name(req.name)] = Version(lower[0])
    return floors


def _pinned() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints-lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_declared_dependency_has_a_lower_bound() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    every = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    assert [r for r in every if not any(s.operator in (">=", "==") for s in Requirement(r).specifier)] == []


def test_lowest_constraints_match_the_declared_floors() -> None:
    declared, pinned = _declared(), _pinned()
    assert set(declared) == set(pinned)
    assert {n: v for n, v in declared.items() if n not in EXEMPT} == {
        n: v for n, v in pinned.items() if n not in EXEMPT
    }
