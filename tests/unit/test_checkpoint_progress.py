"""Progress of long checkpoint writes: bytes on disk against bytes expected; quiet for short writes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bitcpm.training.checkpoint_progress import WriteProgress, human_bytes

pytestmark = pytest.mark.quick


def test_progress_reports_bytes_written_in_tenths_for_logs(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = WriteProgress(tmp_path, expected=4000, what="checkpoint step 7", stream=out)
    (tmp_path / "a.distcp").write_bytes(b"\0" * 1000)
    line = progress.poll()
    assert "checkpoint step 7 [######..................] 1000 B / 3.9 KiB" in line
    progress.poll()  # same tenth: a log gets no second line
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.distcp").write_bytes(b"\0" * 3000)
    progress.poll()
    progress.stop(ok=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "[########################] 3.9 KiB / 3.9 KiB" in lines[1]
    assert lines[2].startswith("bitcpm: checkpoint step 7 written, 3.9 KiB in ")


def test_short_write_prints_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = WriteProgress(tmp_path, expected=10, what="checkpoint step 1", delay_s=60, stream=out)
    progress.start()
    (tmp_path / "x").write_bytes(b"\0" * 10)
    progress.stop(ok=True)
    assert out.getvalue() == ""


def test_failed_write_says_so(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = WriteProgress(tmp_path, expected=10, what="checkpoint step 3", stream=out)
    progress.poll()
    progress.stop(ok=False)
    assert out.getvalue().splitlines()[-1] == "bitcpm: checkpoint step 3 failed"


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 << 20, 3 << 30)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]
