"""Generated from the schema: every key naming a path (a Text spec with a kind), fed every class of bad value of
its kind (tests/support/bad_inputs.py), stops `bitcpm.train` before launch; `bitcpm.bench`, which composes and
checks its job the same way, refuses the first class of each; and a multirun or pipeline member with a bad
value stops the whole study before its first member starts.

Each must exit 2 with one line naming the key, no traceback, and write nothing: the working directory stays empty,
the inputs untouched. Everything runs main() in this process. (Wrong-typed and out-of-range values of every key:
test_schema_acceptance.py; the other entry points: tests/unit/test_bad_arguments.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bitcpm.config.ranges import Text, leaf_fields, spec_of
from tests.support.bad_inputs import KINDS, Case, Inputs, bad_values, snapshot

pytestmark = pytest.mark.quick

PATH_LEAVES = [leaf for leaf in leaf_fields() if isinstance(spec := spec_of(leaf.owner, leaf.name), Text) and spec.kind]
# What a key needs beside it to be read at all (a teacher belongs to a distill stage that starts from a QAT run).
CONTEXT = {
    "stage.init_from": lambda i: ["stage=qat", "stage.tokens=null"],
    "stage.teacher_from": lambda i: ["stage=distill", f"stage.init_from={i.ternary_run}", "stage.tokens=null"],
}


def _override(key: str, value: str) -> tuple[str, str]:
    """The override setting one key, and how the error must name it (list fields: element 0)."""
    if "[]." in key:
        head, field = key.split("[].")
        item = f"[{value!r}]" if field == "inputs" else repr(value)
        return f"{head}=[{{{field}: {item}}}]", f"{head}[0].{field}"
    return f"{key}={value}", key


def _kind(key: str):
    leaf = next(leaf for leaf in PATH_LEAVES if leaf.key == key)
    return _Kind(spec_of(leaf.owner, leaf.name).kind)


class _Kind:
    """The kind a Text spec names, shaped as bad_values() reads kinds."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def option(self, name: str, default=None):
        return default


def test_every_path_key_has_bad_values() -> None:
    assert {leaf.key for leaf in PATH_LEAVES} >= {
        "stage.init_from",
        "stage.teacher_from",
        "data.sources[].inputs",
        "data.sources[].megatron_prefix",
        "data.tokenizer",
        "data.cache_dir",
        "train.output_root",
    }
    assert [leaf.key for leaf in PATH_LEAVES if _kind(leaf.key).kind not in KINDS] == []


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("job_inputs"))


def _run(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def _refused(code, err: str, named: str, what) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (what, code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and named in lines[0], (what, lines)


def _cases():
    for leaf in PATH_LEAVES:
        for case in bad_values(_kind(leaf.key)):
            yield leaf.key, case


@pytest.fixture
def clean_cwd(tmp_path: Path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return work


@pytest.mark.parametrize(("key", "case"), [pytest.param(k, c, id=f"{k}-{c.id}") for k, c in _cases()])
def test_bad_path_stops_before_launch(key: str, case: Case, inputs: Inputs, clean_cwd: Path, capsys) -> None:
    from bitcpm.train import main as train

    value, _ = case.resolve(inputs)
    override, named = _override(key, value)
    before = snapshot(inputs.root)
    code = _run(train, ["tracking=none", *CONTEXT.get(key, lambda i: [])(inputs), override])
    _refused(code, capsys.readouterr().err, named, override)
    assert os.listdir(clean_cwd) == []
    assert snapshot(inputs.root) == before


@pytest.mark.parametrize("key", [leaf.key for leaf in PATH_LEAVES])
def test_bench_refuses_a_bad_path(key: str, inputs: Inputs, clean_cwd: Path, capsys) -> None:
    """The bench composes and checks its job as bitcpm.train does (the classes are tried above): one per key."""
    from bitcpm.bench.cli import main as bench

    for case in bad_values(_kind(key))[:1]:
        override, named = _override(key, case.resolve(inputs)[0])
        code = _run(bench, ["tracking=none", *CONTEXT.get(key, lambda i: [])(inputs), override])
        _refused(code, capsys.readouterr().err, named, override)
    assert os.listdir(clean_cwd) == []


def _good(key: str, inputs: Inputs, tmp: Path) -> str:
    return inputs.good(_kind(key), tmp)


@pytest.mark.parametrize("key", [leaf.key for leaf in PATH_LEAVES])
def test_bad_multirun_member_stops_the_study(key: str, inputs: Inputs, clean_cwd: Path, capsys) -> None:
    """The second member's value is bad (its kind's first class); the first member never starts."""
    from bitcpm.train import main as train

    bad, _ = bad_values(_kind(key))[0].resolve(inputs)
    good_override, named = _override(key, _good(key, inputs, clean_cwd.parent))
    bad_override, _ = _override(key, bad)
    sweep = f"{good_override},{bad_override.split('=', 1)[1]}"
    code = _run(train, ["-m", "tracking=none", *CONTEXT.get(key, lambda i: [])(inputs), sweep])
    err = capsys.readouterr().err
    _refused(code, err, named, sweep)
    assert "member 2/2" in err
    assert os.listdir(clean_cwd) == []


@pytest.mark.parametrize("key", [leaf.key for leaf in PATH_LEAVES])
def test_bad_pipeline_stage_stops_the_pipeline(key: str, inputs: Inputs, clean_cwd: Path, capsys) -> None:
    """The second stage's value is bad (its kind's first class); the first stage never starts."""
    from bitcpm.train import main as train

    bad, _ = bad_values(_kind(key))[0].resolve(inputs)
    stage_overrides = [*CONTEXT.get(key, lambda i: [])(inputs), _override(key, bad)[0]]
    quoted = ", ".join(f'"{o}"' for o in stage_overrides)
    pipeline = f'pipeline=[{{name: first, overrides: ["quant=none"]}}, {{name: second, overrides: [{quoted}]}}]'
    code = _run(train, ["tracking=none", pipeline])
    _refused(code, capsys.readouterr().err, _override(key, bad)[1], pipeline)
    assert os.listdir(clean_cwd) == []
