"""The local multi-rank agent reports the ranks' own exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from launchers.elastic import EXIT_PREEMPTED, child_pids, exit_code

pytestmark = pytest.mark.quick


def test_every_rank_stopped_cleanly_is_75() -> None:
    assert exit_code([EXIT_PREEMPTED, EXIT_PREEMPTED]) == EXIT_PREEMPTED


def test_a_crash_wins_over_a_clean_stop() -> None:
    assert exit_code([EXIT_PREEMPTED, 1]) == 1
    assert exit_code([EXIT_PREEMPTED, -9]) == 128 + 9  # killed by SIGKILL, as a shell reports it


def test_child_pids_finds_this_process_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in child_pids(os.getpid())
    finally:
        child.kill()
        child.wait()
