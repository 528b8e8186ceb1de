"""Command-line arguments of the entry points: one-line argparse errors and the kinds of value an argument takes.

Every argument of every entry point declares its kind as its argparse `type`: a Kind checks the value when the
command line is parsed, before any work starts, and refuses it with one line naming the argument and the file
(exit 2, no traceback). Generic kinds live here (files, directories, outputs, numbers, names); a kind that knows a
format lives beside that format's code (jsonl inputs in bitcpm.data.sources, tokenizers in bitcpm.data.tokenizer,
runs and Hugging Face directories in bitcpm.export.inputs). The tests generate bad values for every argument from
its kind (tests/unit/test_bad_arguments.py), so a new argument is covered by declaring what it takes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bitcpm.config.errors import ConfigError
from bitcpm.config.ranges import Range


class InputError(ConfigError):
    """An argument naming a file or directory that cannot serve (missing, empty, damaged, of the wrong kind)."""


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (`PROG: error: argument X: ...`, exit 2), without the usage."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2 (argparse prints the whole usage block first)."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def fail(prog: str, message: object) -> int:
    """Print an entry point's one-line error; returns exit status 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


@dataclass(frozen=True)
class Kind:
    """An argparse `type`: what an argument takes, checked at parse time (check raises InputError or ValueError)."""

    kind: str
    """The kind's name; the tests pick the bad values to try by it."""
    check: Callable[[str], Any]
    """Returns the parsed value or raises InputError / ValueError with a one-line reason."""
    options: tuple[tuple[str, Any], ...] = ()
    """Parameters of the kind the tests read (e.g. ('ternary', True) for a run that must be ternary)."""

    def __call__(self, text: str) -> Any:
        """The checked value; argparse turns the refusal into `argument X: reason`."""
        try:
            return self.check(text)
        except ValueError as exc:  # InputError and ConfigError are ValueErrors
            raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from None

    @property
    def __name__(self) -> str:  # argparse names the type in some messages
        return self.kind

    def option(self, name: str, default: Any = None) -> Any:
        """One of the kind's parameters."""
        return dict(self.options).get(name, default)


def _nearest_existing(path: Path) -> Path:
    """The path itself or its closest existing ancestor."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def need_file(text: str | Path, what: str = "file") -> Path:
    """An existing, non-empty, readable file."""
    path = Path(text)
    if not path.exists():
        raise InputError(f"{path}: no such {what}")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a {what}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the {what} is empty")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: the {what} cannot be read (permission denied)")
    return path


def need_dir(text: str | Path, what: str = "directory") -> Path:
    """An existing directory."""
    path = Path(text)
    if not path.exists():
        raise InputError(f"{path}: no such {what}")
    if not path.is_dir():
        raise InputError(f"{path}: is a file, expected a {what}")
    return path


def _writable_parent(path: Path) -> None:
    """The nearest existing ancestor of an output is a directory this process may write into."""
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise InputError(f"{path}: cannot be created, {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot be created, {parent} is not writable")


def output_file(text: str | Path) -> Path:
    """A file to write: not an existing directory, and creatable where it is."""
    path = Path(text)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file name to write")
    _writable_parent(path)
    return path


def output_dir(text: str | Path) -> Path:
    """A directory to write into: not an existing file, and creatable where it is."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file, expected a directory to write into")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{path}: the directory is not writable")
        return path
    _writable_parent(path)
    return path


def text(what: str) -> Kind:
    """A non-empty name or label (free text otherwise)."""

    def check(value: str) -> str:
        if not value.strip():
            raise InputError(f"the {what} is empty")
        return value

    return Kind("text", check, (("what", what),))


def number(kind: type[int] | type[float], interval: Range | None = None) -> Kind:
    """An int or float, optionally within an interval (the tests try a wrong-typed and an outside value)."""

    def check(value: str) -> int | float:
        try:
            parsed = kind(value)
        except ValueError:
            raise InputError(f"{value!r}: expected {'an integer' if kind is int else 'a number'}") from None
        if interval is not None and not interval.ok(parsed):
            raise InputError(f"{value}: {interval.describe()}")
        return parsed

    return Kind("number", check, (("type", kind), ("range", interval)))


def choice(values: tuple[str, ...]) -> Kind:
    """One of a few words (for key=value options; argparse arguments use `choices=`)."""

    def check(value: str) -> str:
        if value not in values:
            raise InputError(f"{value}: expected one of {', '.join(values)}")
        return value

    return Kind("choice", check, (("choices", values),))


def _int_list(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{value!r}: expected comma-separated integers") from None
    if not numbers or any(n < 1 for n in numbers):
        raise InputError(f"{value!r}: expected one or more positive integers, comma-separated")
    return numbers


INT_LIST = Kind("int_list", _int_list)
"""Positive integers, comma-separated (widths, step budgets)."""
DIRECTORY = Kind("directory", need_dir)
OUTPUT_FILE = Kind("output_file", output_file)
OUTPUT_DIR = Kind("output_dir", output_dir)
OVERRIDES = Kind("overrides", str)
"""Hydra overrides of a job (key=value): composed and checked with the job, every key named on error."""
