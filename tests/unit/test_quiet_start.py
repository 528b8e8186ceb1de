"""The command line hides megatron-core's known fallback notices, and only those."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_megatron_fallback_notices_are_hidden_and_others_kept() -> None:
    script = (
        "import warnings\n"
        "from bitcpm.backends.megatron_notices import hide_known_warnings\n"
        "hide_known_warnings()\n"
        "import megatron.core.models.gpt.gpt_layer_specs, megatron.core.optimizer\n"
        "warnings.warn('something else')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Apex" not in proc.stderr and "Transformer Engine" not in proc.stderr
    assert "something else" in proc.stderr
    unfiltered = subprocess.run(
        [sys.executable, "-c", "import megatron.core.optimizer"], capture_output=True, text=True
    )
    assert "Transformer Engine and Apex are not installed" in unfiltered.stderr  # the filter has something to hide
