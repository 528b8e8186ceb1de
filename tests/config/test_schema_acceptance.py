"""Generated from the schema: every leaf key, fed a wrong-typed and an out-of-range value, stops before launch.

Each case goes through the front end's main() in this process (fast); a few also run as real subprocesses.
Each must exit 2 with one line naming the key, no traceback, and leave the working directory empty
(no outputs/, no mlflow.db, no mlruns).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from bitcpm.config.ranges import SPECS, Leaf, Range, Text, leaf_fields, spec_of
from bitcpm.config.typecheck import strip_optional

pytestmark = pytest.mark.quick

LEAVES = list(leaf_fields())


def _wrong_value(hint) -> str:
    """A value of the wrong type for a hint, in Hydra override syntax."""
    hint = strip_optional(hint)
    origin = typing.get_origin(hint)
    if origin in (list, dict):
        return "abc"
    return {int: "abc", float: "abc", bool: "maybe", str: "[1,2]"}[hint]


def _outside_value(leaf: Leaf) -> str | None:
    """A value outside the leaf's declared range or choices, or None when it has neither."""
    spec = spec_of(leaf.owner, leaf.name)
    if spec is None or isinstance(spec, Text):
        return None
    bad = spec.outside()
    hint = strip_optional(leaf.hint)
    if isinstance(spec, Range) and (hint is int or typing.get_args(hint) == (int,)):
        bad = int(bad)
    return f"[{bad}]" if typing.get_origin(hint) is list else str(bad)


def _override(key: str, value: str) -> tuple[str, str]:
    """The override setting one leaf, and the key the error must name ([] lists become element 0)."""
    if "[]." in key:
        head, field = key.split("[].")
        extra = "name: x, " if head == "pipeline" and field != "name" else ""
        return f"{head}=[{{{extra}{field}: {value}}}]", f"{head}[0].{field}"
    return f"{key}={value}", key


def _cases():
    for leaf in LEAVES:  # a variant's key (launcher.partition) is set with its choice (launcher=slurm)
        yield pytest.param(leaf.select, leaf.key, _wrong_value(leaf.hint), id=f"{leaf.key}-type")
        outside = _outside_value(leaf)
        if outside is not None:
            yield pytest.param(leaf.select, leaf.key, outside, id=f"{leaf.key}-range")


def test_every_leaf_declares_its_values() -> None:
    """A new int/float/str key without a range, choice or Text entry in SPECS fails here."""
    undeclared = [
        leaf.key for leaf in LEAVES if strip_optional(leaf.hint) is not bool and not spec_of(leaf.owner, leaf.name)
    ]
    assert undeclared == []
    tables = [*SPECS.items(), *((o, o.value_specs()) for o in {leaf.owner for leaf in LEAVES} if o not in SPECS)]
    stale = [(o.__name__, n) for o, d in tables for n in d if n not in {f.name for f in dataclasses.fields(o)}]
    assert stale == []
    assert {"launcher=slurm", "launcher=ascend"} <= {s for leaf in LEAVES for s in leaf.select}  # variants walked


@pytest.mark.parametrize(("select", "key", "value"), list(_cases()))
def test_bad_leaf_stops_before_launch(
    select: tuple[str, ...], key: str, value: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    from bitcpm.train import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    override, named = _override(key, value)
    try:
        code = main([*select, override])
    except SystemExit as exc:  # Hydra-style exits count too
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (override, err)
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert named in err, (override, err)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optim.beta2=1.5", "optim.beta2"),
        ("data.sources=[{inputs: [missing.jsonl]}]", "data.sources[0].inputs"),
        ("train.stop_signals=[SIGTERM,SIGNOPE]", "train.stop_signals[1]"),
    ],
)
def test_bad_leaf_in_a_real_process(override: str, named: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bitcpm.train", override], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert os.listdir(tmp_path) == []
