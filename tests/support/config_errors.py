"""The one-line configuration error a set of overrides produces, for the config tests."""

from __future__ import annotations

import pytest

from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import CommandLine, compose_job


def config_error(overrides: list[str], **kwargs) -> str:
    """Compose the overrides, expect a ConfigError, and return its message (asserted to be one line)."""
    with pytest.raises(ConfigError) as info:
        compose_job(CommandLine(), overrides, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message
