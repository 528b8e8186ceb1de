"""Data preparation reports progress on stderr without any logging set up (as in a worker)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitcpm.data.job_progress import DataProgress

pytestmark = pytest.mark.quick


def test_a_log_gets_a_line_per_tenth_and_a_closing_line():
    out = io.StringIO()
    progress = DataProgress("tokenizing x", 200, "documents", stream=out)
    for _ in range(40):
        progress.update(5, "123 tokens")
    progress.close("all 200")
    lines = out.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines[:-1]] == [
        f"tokenizing x: {n}/200 documents" for n in range(20, 200, 20)
    ]
    assert lines[-1].startswith("bitcpm data: tokenizing x: 200/200 documents (100%), all 200") and "done" in lines[-1]


def test_a_coarse_update_still_prints_each_tenth_it_crosses_once():
    out = io.StringIO()
    progress = DataProgress("scan", 10, "tokens", stream=out)
    progress.update(7)
    progress.update(7)  # clamps at the total
    assert len(out.getvalue().splitlines()) == 1 and "7/10" in out.getvalue()
    assert progress.done == 10


def test_prepare_cli_prints_progress_while_it_tokenizes(tmp_path: Path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": f"document number {i} " * 4000}) + "\n" for i in range(40)))
    cmd = [sys.executable, "-m", "bitcpm.data.prepare", "--input", str(src), "--tokenizer", "builtin"]
    proc = subprocess.run([*cmd, "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("bitcpm data: tokenizing")]
    assert len(lines) >= 3 and "40/40 documents (100%)" in lines[-1] and lines[-1].endswith("- done")
    assert json.loads(proc.stdout)["train_tokens"] > 0
