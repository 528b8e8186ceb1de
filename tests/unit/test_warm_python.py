"""The warm helper keeps `python -m`'s contract: a process of its own per run (cwd, environment, streams,
exit code, signals), a timeout that kills the run and leaves the helper serving the next one."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_module

pytestmark = pytest.mark.integration

PROBE = """
import json, os, sys, time
mode = sys.argv[1]
if mode == "report":
    print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "var": os.environ.get("WARM_PROBE"),
                      "pid": os.getpid(), "path0": sys.path[0], "name": __name__}))
    print("to stderr", file=sys.stderr)
    os.write(2, b"from C level\\n")
    sys.exit(int(sys.argv[2]))
if mode == "kill":
    os.kill(os.getpid(), 9)
if mode == "raise":
    raise ValueError("boom")
if mode == "sleep":
    time.sleep(3600)
"""


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    (tmp_path / "warm_probe.py").write_text(PROBE)
    return tmp_path


def test_each_run_is_its_own_process_with_its_cwd_env_streams_and_exit_code(probe: Path) -> None:
    import json

    first = run_module("warm_probe", ["report", "3"], probe, env={"WARM_PROBE": "one"})
    second = run_module("warm_probe", ["report", "0"], probe, env={"WARM_PROBE": "two"})
    assert (first.returncode, second.returncode) == (3, 0)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["argv"] == ["report", "3"] and a["cwd"] == str(probe) and a["path0"] == str(probe)
    assert (a["var"], b["var"]) == ("one", "two") and a["name"] == "__main__"
    assert a["pid"] != b["pid"] and os.getpid() not in (a["pid"], b["pid"])
    assert first.stderr.splitlines() == ["to stderr", "from C level"]


def test_a_killed_run_reads_as_killed_and_an_exception_as_exit_1(probe: Path) -> None:
    assert run_module("warm_probe", ["kill"], probe).returncode == -signal.SIGKILL
    raised = run_module("warm_probe", ["raise"], probe)
    assert raised.returncode == 1 and "ValueError: boom" in raised.stderr


def test_a_run_past_its_timeout_is_killed_and_the_next_run_is_served(probe: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_module("warm_probe", ["sleep"], probe, timeout=2)
    assert run_module("warm_probe", ["report", "0"], probe).returncode == 0
