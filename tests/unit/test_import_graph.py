"""No import cycles among bitcpm's modules (and the launchers): read statically from the source with ast.

Module-level imports run when a module is first imported, so a cycle there can break imports outright; imports
inside functions run later, but a cycle there still ties two concerns together. Both graphs must be acyclic.
MLflow has one door: only bitcpm.tracking imports mlflow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bitcpm", "launchers")
MLFLOW_DOOR = "bitcpm.tracking"


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


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> tuple[set[str], set[str]]:
    """(module-level, function-level) imported bitcpm/launchers modules of one file."""
    top: set[str] = set()
    deferred: set[str] = set()

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
                (deferred if in_function else top).update(targets(child))
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, nested)

    visit(tree, False)
    return top, deferred


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
