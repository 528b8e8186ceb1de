"""Kinds of allowed values of a config key: a numeric Range, a OneOf choice, a Custom parser, or free Text.

Plain data with no config imports, so every schema module can declare its keys' values next to its fields
(the launcher schemas do; config/ranges.py holds the table of the other groups and the check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """A numeric interval; `also` lists special values allowed outside it (e.g. -1 = per channel)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple[float, ...] = ()

    def ok(self, value: Any) -> bool:
        """Whether the value lies in the interval (or is one of the special values)."""
        if value in self.also:
            return True
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        """The interval in words, e.g. 'expected a value in [0, 1)'."""
        if self.lo is not None and self.hi is not None:
            text = f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        else:
            text = f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        extra = "".join(f" or {_num(v)}" for v in self.also)
        return f"expected a value {text}{extra}"

    def outside(self) -> float:
        """A value this range refuses (for tests generated from the schema)."""
        if self.lo is not None:
            return self.lo if self.lo_open else self.lo - 1
        assert self.hi is not None
        return self.hi if self.hi_open else self.hi + 1


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values."""

    values: tuple[Any, ...]
    hint: str | None = None
    """Shown instead of the full list when it is long (signal names)."""

    def ok(self, value: Any) -> bool:
        """Whether the value is one of the choices."""
        return value in self.values

    def describe(self) -> str:
        """The choices in words."""
        return self.hint or f"expected one of {', '.join(map(str, self.values))}"

    def outside(self) -> str:
        """A value that is none of the choices."""
        return "no_such_choice"


@dataclass(frozen=True)
class Custom:
    """A parser that raises ConfigError for a bad value (e.g. stage.tokens)."""

    parse: Callable[[Any], Any]
    bad: str

    def outside(self) -> str:
        """A value the parser refuses."""
        return self.bad


@dataclass(frozen=True)
class Text:
    """Any string: a name, a path or free text (existence of paths is checked in preflight)."""

    what: str
    kind: str | None = None
    """For a path the job reads or writes, its kind (bitcpm.config.arguments.Kind names): the tests try that
    kind's bad values on the key."""


Spec = Range | OneOf | Custom | Text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


POSITIVE = Range(lo=0, lo_open=True)
AT_LEAST_1 = Range(lo=1)
NON_NEGATIVE = Range(lo=0)
UNIT_OPEN = Range(0, 1, hi_open=True)
UNIT = Range(0, 1)
