"""Wires prepared datasets to the training loop: preparation (rank 0 first), mixture order, batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bitcpm.config.data import DataConfig
from bitcpm.data.dataset import BlendedSampleOrder, TokenWindows, get_batch
from bitcpm.data.mixture import SourceSplits, prepare_sources
from bitcpm.training.distributed import barrier


@dataclass
class TrainingData:
    """Train and validation windows of every source, with their sampling orders."""

    train: list[TokenWindows]
    valid: list[TokenWindows]
    train_order: BlendedSampleOrder
    valid_order: BlendedSampleOrder
    prepared: list[SourceSplits]
    names: list[str]

    def train_micro_batch(self, first_sample: int, size: int) -> torch.Tensor:
        """Micro-batch of training windows starting at a global sample index (exact resume by index)."""
        return get_batch(self.train, self.train_order, first_sample, size)

    def valid_batches(self, count: int, size: int, dp_rank: int, dp_size: int) -> list[torch.Tensor]:
        """The same validation micro-batches every time, split over data-parallel replicas."""
        return [get_batch(self.valid, self.valid_order, (i * dp_size + dp_rank) * size, size) for i in range(count)]

    def valid_unigram_entropy(self) -> list[float]:
        """Unigram entropy (nats/token) of each source's held-out split."""
        return [p.unigram_entropy("valid") for p in self.prepared]


def build_training_data(cfg: DataConfig, seq_length: int, is_main: bool, vocab_size: int) -> TrainingData:
    """Prepare (cached) on rank 0 while the others wait, then open the windows on every rank."""
    if is_main:
        prepared = prepare_sources(cfg, vocab_size)
    barrier()
    if not is_main:
        prepared = prepare_sources(cfg, vocab_size)  # a cache hit now: the metadata is complete
    for src, p in zip(cfg.sources, prepared, strict=True):
        if p.vocab_size > vocab_size:
            raise ValueError(
                f"data source '{src.name}': tokenizer has {p.vocab_size} tokens but model.vocab_size={vocab_size}"
            )
    train = [p.windows("train", seq_length) for p in prepared]
    valid = [p.windows("valid", seq_length) for p in prepared]
    for i, (src, t, v) in enumerate(zip(cfg.sources, train, valid, strict=True)):
        if len(t) == 0 or len(v) == 0:
            key = f"data.sources[{i}].megatron_prefix" if src.megatron_prefix else f"data.sources[{i}].inputs"
            empty = "training" if len(t) == 0 else "validation"
            raise ValueError(
                f"{key}: its {empty} split holds less than one window of train.seq_length={seq_length} + 1 tokens "
                f"(source '{src.name}')"
            )
    weights = [s.weight for s in cfg.sources]
    return TrainingData(
        train=train,
        valid=valid,
        train_order=BlendedSampleOrder([len(t) for t in train], weights, cfg.seed),
        valid_order=BlendedSampleOrder([len(v) for v in valid], weights, cfg.seed + 1),
        prepared=prepared,
        names=[s.name for s in cfg.sources],
    )
