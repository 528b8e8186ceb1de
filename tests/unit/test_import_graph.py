"""Imports run one way through bitcpm's layers, with no cycles: read statically from the source with ast.

Every module of bitcpm and launchers belongs to a layer (LAYERS, highest first); a module imports its own
layer and those below, never one above, whether at module level or inside a function (`if TYPE_CHECKING:`
imports are annotations only and do not count). A module no layer names fails the test, so a new package
has to be placed. Module-level imports run when a module is first imported, so a cycle there can break
imports outright; imports inside functions run later, but a cycle there still ties two concerns together:
both graphs must be acyclic. MLflow has one door: only bitcpm.tracking imports mlflow.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bitcpm", "launchers", "hydra_plugins")
MLFLOW_DOOR = "bitcpm.tracking"

# Highest first. A folder (trailing slash) covers every module under it, a file only itself; the longest
# match places a module, so an entry-point file sits above the rest of its package.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "entry points",  # what a user or a launcher runs; imported by nothing in bitcpm
        (
            "bitcpm/train.py",
            "bitcpm/worker.py",
            "bitcpm/eval.py",
            "bitcpm/bench/__main__.py",
            "bitcpm/bench/cli.py",
            "bitcpm/export/__main__.py",
            "bitcpm/windtunnel/__main__.py",
            "bitcpm/windtunnel/cli.py",
            "bitcpm/windtunnel/acceptance.py",
            "hydra_plugins/",  # Hydra's launcher and sweeper plugins: Hydra imports them, they call the front end
        ),
    ),
    # Jobs built on training runs and checkpoints: they compose configs, train, read runs back, write files.
    ("tools", ("bitcpm/bench/", "bitcpm/evaluation/", "bitcpm/export/", "bitcpm/windtunnel/")),
    ("front end", ("bitcpm/frontend/",)),  # login node: compose, check, plan and submit; reads run directories
    ("training", ("bitcpm/training/",)),  # a rank's run: never the front end (Hydra composition stays out)
    (
        "machinery",
        ("bitcpm/models/", "bitcpm/quant/", "bitcpm/data/", "bitcpm/tracking/", "bitcpm/monitoring/", "bitcpm/plan/"),
    ),
    ("foundation", ("bitcpm/config/", "bitcpm/backends/", "bitcpm/presets/", "bitcpm/__init__.py")),
    # launchers/ knows the worker only by its module name and imports nothing of bitcpm.
    ("launchers", ("launchers/",)),
)

# Upward arrows (importer, imported) in files that are being rewritten elsewhere: each is to be fixed in its
# file, then removed here (an entry that no longer matches an import fails the test).
PENDING: frozenset[tuple[str, str]] = frozenset()


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_sites(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> list[tuple[int, str, bool]]:
    """(line, imported bitcpm/launchers module, inside a function) of every import of one file."""
    sites: list[tuple[int, str, bool]] = []

    def targets(node: ast.Import | ast.ImportFrom) -> set[str]:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import name` imports pkg.name when that is a module, else pkg itself.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        return {n for n in names if n in known and n != module}

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only, never executed
            if isinstance(child, ast.Import | ast.ImportFrom):
                sites.extend((child.lineno, target, in_function) for target in sorted(targets(child)))
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, nested)

    visit(tree, False)
    return sites


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> tuple[set[str], set[str]]:
    """(module-level, function-level) imported bitcpm/launchers modules of one file."""
    sites = _import_sites(tree, module, is_package, known)
    return {t for _, t, deferred in sites if not deferred}, {t for _, t, deferred in sites if deferred}


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    known = set(modules)
    top: dict[str, set[str]] = {}
    every: dict[str, set[str]] = {}
    for name, path in modules.items():
        module_level, function_level = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
        top[name] = module_level
        every[name] = module_level | function_level
    return top, every


def imported_roots(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import in a file, at module level, in functions or under TYPE_CHECKING."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := dfs(start)):
            return found
    return None


def test_find_cycle_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_cycle_among_module_level_imports() -> None:
    top, _ = _graphs()
    assert len(top) > 50  # the walk found the package
    assert find_cycle(top) is None


def test_no_cycle_counting_imports_inside_functions() -> None:
    _, every = _graphs()
    assert find_cycle(every) is None


def test_imported_roots_sees_imports_inside_functions() -> None:
    tree = ast.parse("import os\ndef f():\n    from mlflow.tracking import MlflowClient\n    from . import x\n")
    assert imported_roots(tree) == {"os", "mlflow"}


def test_only_the_tracking_package_imports_mlflow() -> None:
    modules = _modules()
    outside = [name for name in modules if name != MLFLOW_DOOR and not name.startswith(f"{MLFLOW_DOOR}.")]
    assert len(outside) > 50
    offenders = [name for name in outside if "mlflow" in imported_roots(ast.parse(modules[name].read_text()))]
    assert offenders == [], f"import mlflow through bitcpm.tracking.client, not directly: {offenders}"


def layer_of(path: str) -> int | None:
    """Index in LAYERS (0 = highest) of the longest entry matching a repository-relative .py path; None: unplaced."""
    best: tuple[int, int] | None = None  # (length of the entry, layer index)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if (path == entry or (entry.endswith("/") and path.startswith(entry))) and (
                best is None or len(entry) > best[0]
            ):
                best = (len(entry), index)
    return None if best is None else best[1]


def upward_imports(
    modules: dict[str, Path], source: Callable[[Path], str] = Path.read_text
) -> list[tuple[str, str, str]]:
    """(importer, imported, 'path:line: importer (layer) -> imported (layer)') of every import that goes up."""
    known = set(modules)
    relative = {name: path.relative_to(REPO).as_posix() for name, path in modules.items()}
    found = []
    for name, path in sorted(modules.items()):
        here = layer_of(relative[name])
        for line, target, _ in _import_sites(ast.parse(source(path)), name, path.name == "__init__.py", known):
            there = layer_of(relative[target])
            if here is not None and there is not None and there < here:
                arrow = f"{relative[name]}:{line}: {name} ({LAYERS[here][0]}) -> {target} ({LAYERS[there][0]})"
                found.append((name, target, arrow))
    return found


def test_every_module_has_a_layer() -> None:
    paths = [path.relative_to(REPO).as_posix() for path in _modules().values()]
    unplaced = sorted(path for path in paths if layer_of(path) is None)
    assert unplaced == [], f"place these modules in a layer of LAYERS: {unplaced}"


def test_layer_of_takes_the_longest_match() -> None:
    assert layer_of("bitcpm/bench/cli.py") == 0  # the entry point, above the rest of its package
    assert layer_of("bitcpm/bench/measure.py") == 1
    assert layer_of("bitcpm/__init__.py") == layer_of("bitcpm/config/root.py")
    assert layer_of("bitcpm/newpackage/thing.py") is None  # bitcpm/__init__.py covers itself only


def test_upward_imports_sees_one_inside_a_function_and_not_one_for_annotations() -> None:
    modules = _modules()
    low = modules["bitcpm.config.errors"]
    line = low.read_text().count("\n") + 7  # of the import inside f below

    def with_upward_import(path: Path) -> str:
        extra = "\n\nif TYPE_CHECKING:\n    from bitcpm.frontend import compose\n\n"
        extra += "def f():\n    from bitcpm.training import run\n"
        return path.read_text() + (extra if path == low else "")

    found = upward_imports(modules, with_upward_import)
    found = [arrow for importer, _, arrow in found if importer == "bitcpm.config.errors"]
    assert found == [
        f"bitcpm/config/errors.py:{line}: bitcpm.config.errors (foundation) -> bitcpm.training.run (training)"
    ]


def test_no_import_goes_up_a_layer() -> None:
    found = upward_imports(_modules())
    arrows = [arrow for importer, imported, arrow in found if (importer, imported) not in PENDING]
    assert arrows == [], "imports must run down the layers (move the code, or pass it in):\n" + "\n".join(arrows)
    stale = PENDING - {(importer, imported) for importer, imported, _ in found}
    assert not stale, f"fixed upward imports still listed in PENDING: {sorted(stale)}"
