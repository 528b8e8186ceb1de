"""Every test module declares its tier at module level, so the quick tier stays quick and honest.

The tiers (README, Development): `quick` runs in this process in seconds (unit, config, numerics);
`integration` starts processes or services (training runs, torchrun, MLflow servers, Slurm, a browser);
`slow` takes minutes. `python -m pytest -m "not integration and not slow"` is the quick tier.
A module-level `pytestmark` naming one of them is the declaration; a test may add `slow` or `integration`
to itself inside a quick module. conftest.py turns the tier into the test's time bound.
"""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO, TIER_MARKERS

pytestmark = pytest.mark.quick


def declared_tiers(source: str) -> set[str]:
    """Tier markers named in a module-level `pytestmark = ...` (a single mark or a list of marks)."""
    tiers: set[str] = set()
    for node in ast.parse(source).body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if not any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets) or node.value is None:
            continue
        for sub in ast.walk(node.value):
            # pytest.mark.<tier>, also called with arguments (the Attribute node is the same)
            if isinstance(sub, ast.Attribute) and sub.attr in TIER_MARKERS and _is_pytest_mark(sub.value):
                tiers.add(sub.attr)
    return tiers


def _is_pytest_mark(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "mark"


def test_every_test_module_declares_its_tier() -> None:
    modules = sorted((REPO / "tests").rglob("test_*.py"))
    assert len(modules) > 50  # the glob found the suite
    undeclared = [str(p.relative_to(REPO)) for p in modules if not declared_tiers(p.read_text())]
    assert not undeclared, (
        "test modules without a tier; add a module-level "
        f"`pytestmark = pytest.mark.quick` (or integration / slow): {undeclared}"
    )


def test_test_module_names_are_unique() -> None:
    # The test directories are not packages: pytest imports each module by its file name, and a second module of
    # the same name in another directory fails to collect ("import file mismatch").
    names: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}


@pytest.mark.parametrize(
    ("source", "tiers"),
    [
        ("import pytest\npytestmark = pytest.mark.integration\n", {"integration"}),
        ("import pytest\npytestmark = [pytest.mark.quick, pytest.mark.filterwarnings('ignore')]\n", {"quick"}),
        ("import pytest\npytestmark: list = [pytest.mark.slow]\n", {"slow"}),
        ("import pytest\npytestmark = pytest.mark.filterwarnings('ignore')\n", set()),
        # A marker on one test is not a declaration of the module's tier.
        ("import pytest\n@pytest.mark.integration\ndef test_x():\n    pass\n", set()),
        ("import pytest\ndef f():\n    pytestmark = pytest.mark.quick\n", set()),
    ],
)
def test_declared_tiers_reads_only_the_module_level_declaration(source: str, tiers: set[str]) -> None:
    assert declared_tiers(source) == tiers
