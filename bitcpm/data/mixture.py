"""The sources of the data mixture, ready to read: bitcpm's own prepared datasets (tokenized from jsonl, cached)
and existing Megatron-LM datasets (read in place, with their last documents held out for validation)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bitcpm.config.data import DataConfig, DataSourceConfig
from bitcpm.data.dataset import SCAN_CHUNK_TOKENS, Sequences, TokenStream, TokenWindows, unigram_entropy
from bitcpm.data.indexed import indexed_dataset_module
from bitcpm.data.job_progress import DataProgress
from bitcpm.data.megatron_index import (
    cached_max_token_id,
    check_megatron_source,
    held_out_documents,
    scan_cache_path,
    vocabulary_error,
)
from bitcpm.data.prepare import SPLITS, dataset_cache_dir, prepare_dataset


@dataclass(frozen=True)
class SourceSplits:
    """One source of the mixture: where its train and valid tokens are, and the ids they use."""

    name: str
    prefixes: dict[str, str]
    """megatron path prefix (without .bin/.idx) of each split."""
    sequences: dict[str, Sequences]
    """The range of sequences of each split within its prefix (None: the whole file)."""
    vocab_size: int
    """Every token id of the source is below this (the tokenizer's size, or a megatron dataset's max id + 1)."""

    def prefix(self, split: str) -> str:
        """megatron path prefix of `split` ('train' or 'valid')."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.prefixes[split]

    def windows(self, split: str, seq_length: int) -> TokenWindows:
        """Training windows of seq_length + 1 tokens over `split`."""
        return TokenWindows(self.prefix(split), seq_length, self.sequences[split])

    def unigram_entropy(self, split: str) -> float:
        """Unigram entropy (nats/token) of `split`."""
        return unigram_entropy(self.prefix(split), self.sequences[split])


def _prepared_source(cfg: DataConfig, src: DataSourceConfig) -> SourceSplits:
    how = (cfg.valid_fraction, cfg.text_key, cfg.seed)
    # The seed picks the held-out documents: one directory per seed, or two seeds' runs would rewrite each other's.
    target = dataset_cache_dir(Path(cfg.cache_dir), src.inputs, cfg.tokenizer, *how)
    prepared = prepare_dataset(src.inputs, cfg.tokenizer, target, *how)
    prefixes = {split: prepared.prefix(split) for split in SPLITS}
    return SourceSplits(src.name, prefixes, dict.fromkeys(SPLITS), prepared.vocab_size)


def max_token_id(prefix: str, cache_dir: str) -> int:
    """Largest token id of a Megatron-LM dataset: scanned once (with progress), then read from the cache."""
    cached = cached_max_token_id(cache_dir, prefix)
    if cached is not None:
        return cached
    stream = TokenStream(prefix)
    largest = -1
    progress = DataProgress(f"scanning token ids of {prefix}", stream.total_tokens, "tokens")
    for start in range(0, stream.total_tokens, SCAN_CHUNK_TOKENS):
        stop = min(start + SCAN_CHUNK_TOKENS, stream.total_tokens)
        largest = max(largest, int(np.max(stream.read(start, stop))))
        progress.update(stop - start)
    progress.close(f"largest id {largest}")
    path = scan_cache_path(cache_dir, prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps({"prefix": prefix, "max_token_id": largest, "tokens": stream.total_tokens}) + "\n")
    os.replace(tmp, path)
    return largest


def _megatron_source(cfg: DataConfig, src: DataSourceConfig, key: str, vocab_size: int | None) -> SourceSplits:
    prefix = str(src.megatron_prefix)
    header = check_megatron_source(prefix, key)
    index = indexed_dataset_module().IndexedDataset(prefix).index
    itemsize = int(index.dtype_size)
    expected = int(index.sequence_pointers[-1]) + int(index.sequence_lengths[-1]) * itemsize
    if os.path.getsize(prefix + ".bin") != expected:
        raise ValueError(
            f"{key}={prefix}: {prefix}.bin holds {os.path.getsize(prefix + '.bin')} bytes, its index "
            f"{expected} (truncated or from another dataset)"
        )
    largest = max_token_id(prefix, cfg.cache_dir)
    if vocab_size is not None and (message := vocabulary_error(key, prefix, largest, vocab_size)):
        raise ValueError(message)
    held_out = held_out_documents(header.documents, cfg.valid_fraction)
    split_at = int(index.document_indices[header.documents - held_out])
    sequences = {"train": (0, split_at), "valid": (split_at, header.sequences)}
    return SourceSplits(src.name, dict.fromkeys(SPLITS, prefix), sequences, largest + 1)


def prepare_sources(cfg: DataConfig, vocab_size: int | None = None) -> list[SourceSplits]:
    """Every source of the mixture, preparing (or scanning) what is not cached yet; token ids checked against
    vocab_size (model.vocab_size) where given."""
    out = []
    for i, src in enumerate(cfg.sources):
        if src.megatron_prefix is not None:
            out.append(_megatron_source(cfg, src, f"data.sources[{i}].megatron_prefix", vocab_size))
        else:
            try:
                out.append(_prepared_source(cfg, src))
            except ValueError as exc:  # a damaged record, too few documents: name the key as preflight does
                raise ValueError(f"data.sources[{i}].inputs: {exc}") from None
    return out
