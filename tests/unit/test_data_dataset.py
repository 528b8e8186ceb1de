"""Tests for bitcpm.data.dataset: token windows, blended order, batches, unigram entropy."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bitcpm.data.dataset import BlendedSampleOrder, TokenStream, TokenWindows, get_batch, unigram_entropy
from bitcpm.data.indexed import indexed_dataset_module
from bitcpm.data.permutation import FeistelPermutation

pytestmark = pytest.mark.quick


def _write_indexed(prefix: Path, documents: list[list[int]], dtype=np.uint16) -> str:
    builder = indexed_dataset_module().IndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    for doc in documents:
        builder.add_document(np.asarray(doc, dtype=dtype), [len(doc)])
    builder.finalize(str(prefix) + ".idx")
    return str(prefix)


def _random_docs(seed: int, count: int, max_len: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 60000, size=int(rng.integers(1, max_len))).tolist() for _ in range(count)]


@pytest.mark.parametrize("seq_length", [1, 7, 64, 300])
def test_windows_equal_concatenated_stream(tmp_path: Path, seq_length: int) -> None:
    docs = _random_docs(0, 40, 50)  # many documents shorter than a window
    stream = np.concatenate([np.asarray(d) for d in docs])
    windows = TokenWindows(_write_indexed(tmp_path / "d", docs), seq_length)
    assert len(windows) == (len(stream) - 1) // seq_length
    for i in range(len(windows)):
        window = windows[i]
        assert window.dtype == np.int64 and len(window) == seq_length + 1
        assert np.array_equal(window, stream[i * seq_length : i * seq_length + seq_length + 1])
    assert np.array_equal(windows[-1], windows[len(windows) - 1])
    with pytest.raises(IndexError):
        windows[len(windows)]


def test_stream_reads_arbitrary_ranges_and_int32(tmp_path: Path) -> None:
    docs = [[70000 + i for i in range(n)] for n in (3, 1, 9, 4)]
    stream = TokenStream(_write_indexed(tmp_path / "d", docs, dtype=np.int32))
    flat = np.concatenate([np.asarray(d) for d in docs])
    assert stream.total_tokens == len(flat)
    for start in range(len(flat)):
        for stop in range(start, len(flat) + 1):
            assert np.array_equal(stream.read(start, stop), flat[start:stop])


def test_windows_survive_pickling(tmp_path: Path) -> None:
    windows = TokenWindows(_write_indexed(tmp_path / "d", _random_docs(3, 10, 30)), 5)
    clone = pickle.loads(pickle.dumps(windows))
    assert len(clone) == len(windows) and np.array_equal(clone[3], windows[3])


def test_too_short_dataset_has_no_windows(tmp_path: Path) -> None:
    assert len(TokenWindows(_write_indexed(tmp_path / "d", [[1, 2, 3, 4]]), 4)) == 0
    assert len(TokenWindows(_write_indexed(tmp_path / "e", [[1, 2, 3, 4, 5]]), 4)) == 1


def _prefix_deviation(order: BlendedSampleOrder, weights: list[float], n: int) -> np.ndarray:
    chosen = np.array([order.sample(g)[0] for g in range(n)])
    counts = np.cumsum(np.eye(len(weights))[chosen], axis=0)
    expected = np.arange(1, n + 1)[:, None] * (np.asarray(weights) / sum(weights))
    return np.abs(counts - expected).max(axis=0)


def test_blend_follows_weights_at_every_prefix() -> None:
    weights = [0.6, 0.25, 0.1, 0.05]
    order = BlendedSampleOrder([1000, 300, 17, 5], weights, seed=3)
    # Each dataset stays within ~1 sample of its share at every point of the first 10k samples.
    assert _prefix_deviation(order, weights, 10_000).max() <= 1.5
    skewed = [1.0, 1e-3]
    assert _prefix_deviation(BlendedSampleOrder([10, 10], skewed, seed=0), skewed, 10_000).max() <= 1.5


def test_blend_is_deterministic_and_resumable() -> None:
    sizes, weights = [123, 45, 6], [0.5, 0.3, 0.2]
    order = BlendedSampleOrder(sizes, weights, seed=11)
    sequence = [order.sample(g) for g in range(5000)]
    assert sequence == [BlendedSampleOrder(sizes, weights, seed=11)[g] for g in range(5000)]
    for g in (0, 1, 777, 4999, 123_456_789):
        fresh = BlendedSampleOrder(sizes, weights, seed=11)
        assert fresh.sample(g) == order.sample(g)  # no replay needed to land on sample g
    assert sequence != [BlendedSampleOrder(sizes, weights, seed=12)[g] for g in range(5000)]


def test_each_epoch_visits_every_sample_once_in_new_order() -> None:
    order = BlendedSampleOrder([13, 29], [1.0, 1.0], seed=5)
    picks = [order.sample(g) for g in range(2 * 29 * 3)]
    small = [s for d, s in picks if d == 0]
    epochs = [small[i : i + 13] for i in range(0, 13 * 6, 13)]
    assert all(sorted(e) == list(range(13)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == len(epochs)


def test_blend_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no samples"):
        BlendedSampleOrder([10, 0], [0.5, 0.5], seed=0)
    with pytest.raises(ValueError):
        BlendedSampleOrder([10, 10], [0.0, 0.0], seed=0)
    zero_weight = BlendedSampleOrder([10, 0], [1.0, 0.0], seed=0)
    assert {zero_weight.sample(g)[0] for g in range(100)} == {0}


@pytest.mark.parametrize("n", [1, 2, 3, 16, 17, 1000])
def test_feistel_permutation_is_a_bijection(n: int) -> None:
    perm = FeistelPermutation(n, key=99)
    assert sorted(perm(i) for i in range(n)) == list(range(n))


def test_get_batch_stacks_windows_in_order(tmp_path: Path) -> None:
    a = TokenWindows(_write_indexed(tmp_path / "a", _random_docs(1, 30, 40)), 8)
    b = TokenWindows(_write_indexed(tmp_path / "b", _random_docs(2, 30, 40)), 8)
    order = BlendedSampleOrder([len(a), len(b)], [0.7, 0.3], seed=1)
    batch = get_batch([a, b], order, start_sample=10, batch_size=6)
    assert batch.dtype == torch.int64 and batch.shape == (6, 9)
    for row, g in zip(batch, range(10, 16), strict=True):
        dataset, index = order.sample(g)
        assert torch.equal(row, torch.from_numpy([a, b][dataset][index]))


def test_unigram_entropy_matches_closed_form(tmp_path: Path) -> None:
    # Token counts 4, 2, 1, 1 out of 8 spread over documents: H = 1.75 bits = 1.75 ln 2 nats.
    prefix = _write_indexed(tmp_path / "d", [[5, 5, 9], [5, 7], [5, 9, 3]])
    assert unigram_entropy(prefix) == pytest.approx(1.75 * math.log(2), abs=1e-12)
    uniform = _write_indexed(tmp_path / "u", [list(range(100)) * 3])
    assert unigram_entropy(uniform) == pytest.approx(math.log(100), abs=1e-12)
