"""Generated from every entry point's argument list: each argument, fed every class of bad value its kind has
(tests/support/bad_inputs.py), stops before any work with exit status 2 and one line naming the argument or the file,
no traceback, and leaves every file as it was (nothing half-written in the output location).

The argparse entry points are walked action by action (sub-commands included); an argument that declares no kind
fails test_every_argument_declares_a_kind, so a new argument is covered by saying what it takes. bitcpm.eval's
key=value options are generated from bitcpm.eval.KEYS the same way. Every case runs the entry point's main() in this
process. (bitcpm.train, bitcpm.bench and their multirun and pipeline members: tests/config/test_bad_job_inputs.py.)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import bitcpm.eval as eval_cli
import launchers.status as status_cli
from bitcpm.data import prepare as prepare_cli
from bitcpm.data import tokenizer as tokenizer_cli
from bitcpm.export import __main__ as export_cli
from bitcpm.training import convert_checkpoint as convert_cli
from bitcpm.training import verify as verify_cli
from bitcpm.windtunnel import cli as windtunnel_cli
from tests.support.bad_inputs import KINDS, Case, Inputs, bad_values, snapshot

pytestmark = pytest.mark.quick


@dataclass(frozen=True)
class EntryPoint:
    """An argparse command line and the main() that parses it."""

    name: str
    parser: Callable[[], argparse.ArgumentParser]
    main: Callable[[list[str]], int | None]
    skip: tuple[str, ...] = ()
    """Sub-commands left out (windtunnel search only says where it moved: tests/unit/test_optuna_sweep_space.py)."""


ENTRY_POINTS = [
    EntryPoint("export", export_cli.parser, export_cli.main),
    EntryPoint("windtunnel", windtunnel_cli.parser, windtunnel_cli.main, skip=("search",)),
    EntryPoint("data.prepare", prepare_cli.parser, prepare_cli.main),
    EntryPoint("data.tokenizer", tokenizer_cli.parser, tokenizer_cli.main),
    EntryPoint("launchers.status", status_cli.parser, status_cli.main),
    EntryPoint("convert_checkpoint", convert_cli.parser, convert_cli.main),
    EntryPoint("training.verify", verify_cli.parser, verify_cli.main),
]
# A good value where the kind's own good one would not do (a model preset must exist).
GOOD = {("windtunnel transfer", "--target"): "1b"}
FLAGS = (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._VersionAction)


@dataclass(frozen=True)
class Argument:
    """One argument of one (sub-)command."""

    entry: EntryPoint
    command: tuple[str, ...]
    """Sub-command path under the entry point ('packed',)."""
    action: argparse.Action
    parser: argparse.ArgumentParser
    """The (sub-)parser the argument belongs to."""

    @property
    def label(self) -> str:
        """How argparse (and the user) names it: its option string, or its positional name."""
        return (
            self.action.option_strings[0]
            if self.action.option_strings
            else str(self.action.metavar or self.action.dest)
        )

    @property
    def id(self) -> str:
        return " ".join([self.entry.name, *self.command, self.label])


def _walk(entry: EntryPoint, parser: argparse.ArgumentParser, command: tuple[str, ...]) -> Iterator[Argument]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name not in entry.skip:
                    yield from _walk(entry, sub, (*command, name))
        elif not isinstance(action, FLAGS):
            yield Argument(entry, command, action, parser)


ARGUMENTS = [arg for entry in ENTRY_POINTS for arg in _walk(entry, entry.parser(), ())]


def _kind(arg: Argument):
    return getattr(arg.action.type, "kind", None)


def test_every_argument_declares_a_kind() -> None:
    """A new argument without a Kind (or argparse choices) has no bad values to try: it fails here."""
    undeclared = [a.id for a in ARGUMENTS if not a.action.choices and _kind(a) not in KINDS]
    assert undeclared == []
    assert len(ARGUMENTS) >= 40  # the walk found the sub-commands


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("inputs"))


def _base(arg: Argument, inputs: Inputs, tmp: Path) -> list[str]:
    """The command line without the argument under test: its sub-commands and every other required argument."""
    argv = list(arg.command)
    for action in arg.parser._actions:
        # (argparse marks a nargs="*" positional required, yet it takes nothing)
        required = action.nargs not in ("*", "?") if not action.option_strings else action.required
        if action is arg.action or not required or isinstance(action, (*FLAGS, argparse._SubParsersAction)):
            continue
        other = Argument(arg.entry, arg.command, action, arg.parser)
        value = GOOD.get((" ".join([arg.entry.name, *arg.command]), other.label)) or inputs.good(action.type, tmp)
        argv += [*action.option_strings[:1], value]
    return argv


def _cases(arg: Argument) -> list[Case]:
    if arg.action.choices:  # argparse choices (a value outside them)
        return [Case("no-such-choice", lambda i: "no_such_choice")]
    return bad_values(arg.action.type)


def _run(main: Callable[[list[str]], int | None], argv: list[str]) -> int | None:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's refusal
        return exc.code if isinstance(exc.code, int) else 2


def _params() -> Iterator:
    for arg in ARGUMENTS:
        if arg.action.choices or _kind(arg) in KINDS:
            for case in _cases(arg):
                yield pytest.param(arg, case, id=f"{arg.id}-{case.id}")


def _assert_one_line_refusal(code, err: str, names: tuple[str, ...], what: str) -> None:
    """Exit 2, one line on stderr naming one of `names`, no traceback."""
    lines = err.strip().splitlines()
    assert code == 2, (what, code, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, (what, lines)
    assert any(n and n in lines[0] for n in names), (what, names, lines[0])


@pytest.mark.parametrize(("arg", "case"), list(_params()))
def test_bad_argument_stops_before_any_work(
    arg: Argument, case: Case, inputs: Inputs, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    value, named = case.resolve(inputs)
    argv = _base(arg, inputs, tmp_path)
    if arg.action.option_strings:
        argv += [arg.label, value]
    else:
        position = len(arg.command)  # positionals go in declaration order, after the sub-commands
        for action in arg.parser._actions:
            if action is arg.action:
                break
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                position += 1 if action.nargs not in ("*", "?") else 0
        argv.insert(position, value)
    before = snapshot(tmp_path, inputs.root)
    code = _run(arg.entry.main, argv)
    _assert_one_line_refusal(code, capsys.readouterr().err, (arg.label, named), " ".join(argv))
    assert snapshot(tmp_path, inputs.root) == before


def test_unknown_sub_command_is_one_line(capsys) -> None:
    for entry in ENTRY_POINTS:
        if any(isinstance(a, argparse._SubParsersAction) for a in entry.parser()._actions):
            code = _run(entry.main, ["no_such_command"])
            _assert_one_line_refusal(code, capsys.readouterr().err, ("no_such_command",), entry.name)


# bitcpm.eval: RUN_OR_EXPORT key=value ... (not argparse): generated from its kinds the same way.
EVAL_ARGUMENTS = [("RUN_OR_EXPORT", eval_cli.TARGET), *eval_cli.KEYS.items()]


def test_every_eval_key_declares_a_kind() -> None:
    assert [key for key, kind in EVAL_ARGUMENTS if kind.kind not in KINDS] == []


@pytest.mark.parametrize(
    ("key", "case"),
    [pytest.param(key, case, id=f"eval {key}-{case.id}") for key, kind in EVAL_ARGUMENTS for case in bad_values(kind)],
)
def test_bad_eval_argument_stops_before_any_work(
    key: str, case: Case, inputs: Inputs, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    value, named = case.resolve(inputs)
    target = value if key == "RUN_OR_EXPORT" else str(inputs.ternary_run)
    argv = [target, "tasks=tiny" if key != "tasks" else f"tasks={value}"]
    if key not in ("RUN_OR_EXPORT", "tasks"):
        argv.append(f"{key}={value}")
    before = snapshot(tmp_path, inputs.root)
    code = _run(eval_cli.main, argv)
    _assert_one_line_refusal(code, capsys.readouterr().err, (key, named), " ".join(argv))
    assert snapshot(tmp_path, inputs.root) == before


def test_eval_baseline_auto_without_init_from_stops_before_any_work(inputs: Inputs, capsys) -> None:
    code = _run(eval_cli.main, [str(inputs.ternary_run), "tasks=tiny", "baseline=auto"])
    _assert_one_line_refusal(code, capsys.readouterr().err, ("baseline=auto",), "baseline=auto")


def test_text_key_missing_from_an_input_is_one_line(inputs: Inputs, tmp_path: Path, capsys) -> None:
    argv = [
        "--input",
        str(inputs.jsonl),
        "--tokenizer",
        "builtin",
        "--output",
        str(tmp_path / "out"),
        "--text-key",
        "body",
    ]
    code = _run(prepare_cli.main, argv)
    _assert_one_line_refusal(code, capsys.readouterr().err, ("missing text key 'body'",), "--text-key body")
    assert not (tmp_path / "out").exists()
