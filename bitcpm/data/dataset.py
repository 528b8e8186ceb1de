"""Training-time data access: fixed-length token windows, blended sample order, batches, baselines."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from bitcpm.data.indexed import indexed_dataset_module
from bitcpm.data.permutation import FeistelPermutation, mix64

# Tokens read per chunk when scanning a whole split; bounds memory for arbitrarily large datasets.
SCAN_CHUNK_TOKENS = 1 << 24


Sequences = tuple[int, int] | None
"""A range [first, stop) of sequence numbers of an indexed dataset; None: all of them."""


class TokenStream:
    """Sequences of a megatron indexed dataset (all, or a contiguous range) viewed as one memory-mapped stream."""

    def __init__(self, prefix: str, sequences: Sequences = None) -> None:
        self._open(prefix, sequences)

    def __getstate__(self) -> dict:
        # Pickle (e.g. into DataLoader workers) by path and re-map, instead of copying mmap'd arrays.
        return {"prefix": self.prefix, "sequences": self.sequences}

    def __setstate__(self, state: dict) -> None:
        self._open(state["prefix"], state.get("sequences"))

    def _open(self, prefix: str, sequences: Sequences) -> None:
        """Map the .idx/.bin pair at `prefix`."""
        self.prefix, self.sequences = prefix, sequences
        bin_path = prefix + ".bin"
        if not os.path.isfile(bin_path) or not os.path.isfile(prefix + ".idx"):
            raise ValueError(f"no indexed dataset at {prefix} (.bin/.idx missing)")
        # numpy cannot mmap an empty file, and an empty split (valid_fraction=0) is legitimate.
        self.dataset = None if os.path.getsize(bin_path) == 0 else indexed_dataset_module().IndexedDataset(prefix)
        first, stop = (0, 0) if self.dataset is None else (sequences or (0, len(self.dataset)))
        if first >= stop:
            self.total_tokens = 0
            return
        index = self.dataset.index
        self.itemsize = int(index.dtype_size)
        # Pointers are byte offsets written back to back, so (pointer - first pointer) / itemsize is the
        # position in the stream of the range.
        self.pointers = index.sequence_pointers[first:stop] - index.sequence_pointers[first]
        self.lengths = index.sequence_lengths[first:stop]
        self.first = first
        self.total_tokens = int(self.pointers[-1]) // self.itemsize + int(self.lengths[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the stream as int64, crossing sequence boundaries as needed."""
        if not 0 <= start <= stop <= self.total_tokens:
            raise IndexError(f"token range [{start}, {stop}) outside stream of {self.total_tokens} tokens")
        if start == stop:
            return np.zeros(0, dtype=np.int64)
        pieces = []
        seq = int(np.searchsorted(self.pointers, start * self.itemsize, side="right")) - 1
        pos = start
        while pos < stop:
            seq_start = int(self.pointers[seq]) // self.itemsize
            take = min(stop, seq_start + int(self.lengths[seq])) - pos
            if take > 0:
                pieces.append(self.dataset.get(self.first + seq, offset=pos - seq_start, length=take))
                pos += take
            seq += 1
        return np.concatenate(pieces).astype(np.int64)


class TokenWindows:
    """Non-overlapping windows of seq_length + 1 tokens; window i covers [i*seq, i*seq + seq + 1)."""

    def __init__(self, prefix: str, seq_length: int, sequences: Sequences = None) -> None:
        if seq_length < 1:
            raise ValueError(f"seq_length must be positive, got {seq_length}")
        self.stream = TokenStream(prefix, sequences)
        self.seq_length = seq_length

    def __len__(self) -> int:
        # Consecutive windows share one boundary token: the last target of i is the first input of i + 1.
        return max(0, (self.stream.total_tokens - 1) // self.seq_length)

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        start = (i % n) * self.seq_length
        return self.stream.read(start, start + self.seq_length + 1)


class BlendedSampleOrder:
    """Deterministic infinite order of (dataset, sample) pairs following mixture weights.

    Mixture: weights are apportioned (largest remainder, every positive weight gets at least one
    slot) into integer quotas over a period of `period` samples. Within a period, the j-th sample
    of dataset d is placed at its ideal time (j + 0.5) / quota_d and slots are sorted by that time
    (ties by dataset index): the Sainte-Lague/Webster divisor sequence, i.e. whichever dataset is
    furthest behind its share goes next. Every prefix of the order therefore holds each dataset
    within about one sample of its share (0.5 + K * w_d / 2 for K datasets), not a random walk.

    Resume: the period is stored as two small arrays (dataset and its rank per slot), so sample(g)
    is O(1): cycle g // period contributes quota_d draws per dataset. The k-th draw from dataset d
    maps to epoch k // size_d and a seeded keyed permutation (a Feistel cipher, O(1) memory) of
    that epoch, so every epoch visits each sample exactly once in a fresh order.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int, period: int = 1 << 16) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError("sizes and weights must be non-empty and of equal length")
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero: {list(weights)}")
        for i, (size, weight) in enumerate(zip(sizes, weights, strict=True)):
            if weight > 0 and size <= 0:
                raise ValueError(f"dataset {i} has weight {weight} but no samples")
        self.sizes = [int(s) for s in sizes]
        self.seed = int(seed)
        self.quotas = _apportion(weights, period)
        self.period = period
        times = np.concatenate([(np.arange(q) + 0.5) / q for q in self.quotas])
        owners = np.repeat(np.arange(len(self.quotas)), self.quotas)
        ranks = np.concatenate([np.arange(q) for q in self.quotas])
        slot_order = np.lexsort((owners, times))
        self._slot_dataset = owners[slot_order].astype(np.int32)
        self._slot_rank = ranks[slot_order].astype(np.int64)
        self._perms: dict[tuple[int, int], FeistelPermutation] = {}

    def sample(self, g: int) -> tuple[int, int]:
        """(dataset index, sample index within that dataset) of global sample number g >= 0."""
        if g < 0:
            raise IndexError(f"sample number must be non-negative, got {g}")
        cycle, slot = divmod(int(g), self.period)
        dataset = int(self._slot_dataset[slot])
        draw = cycle * self.quotas[dataset] + int(self._slot_rank[slot])
        epoch, position = divmod(draw, self.sizes[dataset])
        return dataset, self._permutation(dataset, epoch)(position)

    __getitem__ = sample

    def _permutation(self, dataset: int, epoch: int) -> FeistelPermutation:
        """Permutation of dataset's samples for one epoch (small cache: consecutive g share epochs)."""
        key = (dataset, epoch)
        perm = self._perms.get(key)
        if perm is None:
            if len(self._perms) > 64:
                self._perms.clear()
            perm = FeistelPermutation(self.sizes[dataset], mix64(mix64(self.seed) ^ mix64(dataset) ^ epoch))
            self._perms[key] = perm
        return perm


def _apportion(weights: Sequence[float], total: int) -> list[int]:
    """Integer quotas summing to `total`, proportional to weights (largest remainder), >= 1 if weight > 0."""
    positive = sum(1 for w in weights if w > 0)
    if total < positive:
        raise ValueError(f"period {total} is smaller than the number of weighted datasets")
    norm = sum(weights)
    exact = [w / norm * total for w in weights]
    quotas = [int(math.floor(x)) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: total - sum(quotas)]:
        quotas[i] += 1
    for i, w in enumerate(weights):
        if w > 0 and quotas[i] == 0:
            # A tiny but positive weight must still be sampled; take the slot from the largest quota.
            quotas[quotas.index(max(quotas))] -= 1
            quotas[i] = 1
    return quotas


def get_batch(
    datasets: Sequence[TokenWindows], order: BlendedSampleOrder, start_sample: int, batch_size: int
) -> torch.LongTensor:
    """Samples start_sample .. start_sample + batch_size - 1 of `order`, stacked as [batch, seq + 1]."""
    rows = []
    for g in range(start_sample, start_sample + batch_size):
        dataset, index = order.sample(g)
        rows.append(datasets[dataset][index])
    return torch.from_numpy(np.stack(rows)).long()


def unigram_entropy(prefix: str, sequences: Sequences = None) -> float:
    """Entropy (nats/token) of the token frequency distribution of a split: the unigram-model loss."""
    stream = TokenStream(prefix, sequences)
    if stream.total_tokens == 0:
        raise ValueError(f"{prefix} holds no tokens")
    counts = np.zeros(0, dtype=np.int64)
    for start in range(0, stream.total_tokens, SCAN_CHUNK_TOKENS):
        chunk = np.bincount(stream.read(start, min(start + SCAN_CHUNK_TOKENS, stream.total_tokens)))
        if len(chunk) > len(counts):
            counts = np.pad(counts, (0, len(chunk) - len(counts)))
        counts[: len(chunk)] += chunk
    p = counts[counts > 0] / stream.total_tokens
    return float(-(p * np.log(p)).sum())
