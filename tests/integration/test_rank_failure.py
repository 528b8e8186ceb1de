"""A two-rank job (tp=2 over gloo, the local launcher) in which one rank fails says why once: the failing rank's
one line, no traceback from the rank whose collective broke because of it, no log lines of torch's agent.

The failure: a record deep inside a large data file is damaged. The front end checks a file this size by its first
records and its last line only (reading it whole is the preparation's job), so the job starts; rank 0 finds the
record while it prepares the data, and rank 1, waiting for it at a barrier, loses its peer. (Every rank failing alike,
printed once: tests/unit/test_rank_errors.py.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bitcpm.data.sources import FULL_CHECK_BYTES, SAMPLE_BYTES
from tests.conftest import run_module

pytestmark = pytest.mark.integration

BASE = ["experiment=smoke", "parallel=tp2", "train.steps=2", "tracking=none"]


def _train(tmp_path: Path, data: Path):
    args = [*BASE, f"data.sources=[{{inputs: ['{data}']}}]", f"data.cache_dir={tmp_path}/cache"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return run_module("bitcpm.train", [*args, f"train.output_root={tmp_path}/out"], tmp_path, env=env, timeout=240)


def _said_once(stderr: str) -> str:
    """The one line of the failure; everything else on stderr may only be the data preparation's progress."""
    assert "Traceback" not in stderr and "[rank" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("bitcpm data: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_a_rank_that_fails_is_reported_once(tmp_path: Path) -> None:
    text = "The river runs past the old mill and the town beyond it, where the market opens at dawn. " * 10
    record = json.dumps({"text": text}) + "\n"
    count, damaged = FULL_CHECK_BYTES // len(record) + 100, SAMPLE_BYTES // len(record) + 50
    data = tmp_path / "corpus.jsonl"
    with open(data, "w") as handle:  # one damaged record just past what the front end samples
        handle.writelines('{"text": "a record cut short\n' if i == damaged else record for i in range(count))
    proc = _train(tmp_path, data)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _said_once(proc.stderr)
    assert (
        line.startswith("bitcpm: error: data.sources[0].inputs: ")
        and f"corpus.jsonl:{damaged + 1}: invalid JSON" in line
    )
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []  # the failed preparation removed
