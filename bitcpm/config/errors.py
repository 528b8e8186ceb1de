"""The configuration error every check raises, and the one parser several checks share (no other imports)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run; the message is a single line naming the offending keys."""


def parse_tokens(value: str | None) -> int | str | None:
    """Parse stage.tokens: None, 'auto', or an integer written as 2000000, 2_000_000 or 2e6."""
    if value is None or value == "auto":
        return value
    text = str(value).replace("_", "")
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"stage.tokens={value}: expected an integer, 'auto' or null") from None
    if number <= 0 or number != int(number):
        raise ConfigError(f"stage.tokens={value}: expected a positive integer")
    return int(number)
