"""A short training run on an existing Megatron-LM dataset blended with the built-in corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitcpm.training.metrics_log import metric_series
from tests.conftest import only_run_dir, run_train
from tests.unit.test_data_megatron import random_documents, write_megatron_dataset

pytestmark = pytest.mark.integration


def test_training_reads_a_megatron_prefix_blended_with_builtin(tmp_path: Path, data_cache: Path) -> None:
    docs = random_documents(60, seed=3)
    prefix = write_megatron_dataset(tmp_path / "mlm_corpus", docs)
    sources = (
        f"data.sources=[{{name:mlm,megatron_prefix:'{prefix}',weight:0.3}},"
        "{name:builtin,inputs:[builtin],weight:0.7}]"
    )
    args = ["experiment=smoke", "train.steps=4", "tracking.log_interval=1", "data.valid_fraction=0.1", sources]
    proc = run_train(args, tmp_path, data_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    held_out = np.concatenate(docs[-6:])  # data.valid_fraction=0.1 of 60 documents: the last six
    counts = np.bincount(held_out)
    p = counts[counts > 0] / len(held_out)
    entropy = float(-(p * np.log(p)).sum())
    assert f"held-out unigram entropy of 'mlm': {entropy:.4f}" in proc.stdout
    assert "held-out unigram entropy of 'builtin'" in proc.stdout
    losses = metric_series(only_run_dir(tmp_path) / "metrics.jsonl", "loss")
    assert sorted(losses) == [1, 2, 3, 4]
