"""How a multi-rank job reports a failure once: ranks leave their error for the local launcher (launchers/elastic.py),
a rank whose collective broke because a peer failed stays quiet, and the launcher prints the first failure alone.

The last test runs the real agent (torchrun's, in this process) over two small ranks that fail alike."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bitcpm import worker
from launchers import elastic
from launchers.local import free_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.quick


def test_a_rank_leaves_its_line_for_the_launcher(tmp_path: Path, monkeypatch, capsys) -> None:
    assert worker.fail(2, "data.tokenizer=x: not found") == 2  # alone: printed
    assert capsys.readouterr().err == "bitcpm: error: data.tokenizer=x: not found\n"
    monkeypatch.setenv(worker.RANK_ERRORS_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    assert worker.fail(3, "loss is NaN") == 3
    assert capsys.readouterr().err == ""
    assert (tmp_path / "rank_1").read_text() == "3\nbitcpm: error: loss is NaN\n"
    assert elastic.first_report(tmp_path) == (3, "bitcpm: error: loss is NaN")


def test_a_broken_collective_after_a_peer_failed_is_recognised(tmp_path: Path, monkeypatch) -> None:
    gone = RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:28552")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not worker.peer_failed(gone)  # alone, there is no peer to blame
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert worker.peer_failed(gone)
    wrapped = ValueError("while saving")
    wrapped.__cause__ = gone
    assert worker.peer_failed(wrapped)
    assert not worker.peer_failed(ZeroDivisionError("division by zero"))  # a crash of its own: a traceback
    monkeypatch.setenv(worker.RANK_ERRORS_ENV, str(tmp_path))
    (tmp_path / "rank_1").write_text("2\nbitcpm: error: data.sources[0].inputs: bad\n")
    assert worker.peer_failed(ZeroDivisionError("division by zero"))  # the peer reported first: its error stands


def test_the_first_report_is_the_earliest(tmp_path: Path) -> None:
    assert elastic.first_report(tmp_path) is None
    (tmp_path / "rank_1").write_text("2\nbitcpm: error: first\n")
    (tmp_path / "rank_0").write_text("1\nTraceback (most recent call last):\n  ...\nRuntimeError: later\n")
    earlier = (tmp_path / "rank_1").stat().st_mtime_ns - 10**9
    os.utime(tmp_path / "rank_1", ns=(earlier, earlier))
    assert elastic.first_report(tmp_path) == (2, "bitcpm: error: first")
    assert elastic._describe(1, -signal.SIGKILL) == "bitcpm: error: rank 1 was killed by SIGKILL"


RANK = """
import os, sys, time
from pathlib import Path
from bitcpm.worker import RANK_ERRORS_ENV, fail
code = fail(2, "data.sources[0].inputs: its training split holds less than one window")
other = Path(os.environ[RANK_ERRORS_ENV]) / f"rank_{1 - int(os.environ['RANK'])}"
for _ in range(100):  # both ranks report before either exits (the agent stops the rest at the first exit)
    if other.exists():
        break
    time.sleep(0.05)
sys.exit(code)
"""


def test_the_launcher_prints_an_error_every_rank_shares_once(tmp_path: Path, capfd, monkeypatch) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    previous = signal.getsignal(signal.SIGINT)
    argv = ["--nnodes=1", "--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    try:
        code = elastic.main([*argv, str(script)])
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capfd.readouterr().err
    assert code == 2
    line = "bitcpm: error: data.sources[0].inputs: its training split holds less than one window"
    assert err.strip().splitlines() == [line]  # both ranks said it; torch's agent logged nothing
    assert elastic.RANK_ERRORS_ENV not in os.environ
