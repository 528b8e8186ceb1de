"""The launcher layer imports nothing heavy and nothing of bitcpm at module import (checked in a fresh process)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(
    "launchers" if p.name == "__init__.py" else f"launchers.{p.stem}" for p in (REPO / "launchers").glob("*.py")
)
FORBIDDEN = ("torch", "megatron", "submitit", "torch_npu", "mindspeed", "bitcpm", "hydra", "omegaconf", "mlflow")


def test_every_launcher_module_is_light():
    code = (
        "import importlib, json, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert len(MODULES) >= 10
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


@pytest.mark.parametrize("path", sorted((REPO / "launchers").glob("*.py")), ids=lambda p: p.name)
def test_no_module_level_import_of_bitcpm(path: Path):
    # Lazy imports inside functions are fine; the package must not lean on bitcpm when it is imported.
    tree = ast.parse(path.read_text())
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        assert not [n for n in names if n.split(".")[0] in FORBIDDEN], f"{path.name}: {names}"
