"""Existing Megatron-LM datasets as sources: written by megatron-core's own IndexedDatasetBuilder, read in place,
split into train and the last documents for validation, blended with a built-in source, checked before launch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitcpm.config.data import DataConfig, DataSourceConfig
from bitcpm.config.validate import ConfigError
from bitcpm.data.megatron_index import read_header, scan_cache_path
from bitcpm.data.mixture import prepare_sources
from bitcpm.frontend.compose import CommandLine, compose_job

pytestmark = pytest.mark.quick

VOCAB = 8192  # model=debug


def write_megatron_dataset(prefix: Path, documents: list[np.ndarray], dtype=np.uint16) -> str:
    """A prefix as Megatron-LM's preprocess_data.py leaves it: megatron-core's builder, one sequence per document."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    for doc in documents:
        builder.add_document(np.asarray(doc, dtype=dtype), [len(doc)])
    builder.finalize(str(prefix) + ".idx")
    return str(prefix)


def random_documents(count: int, high: int = VOCAB, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, size=int(rng.integers(40, 120))) for _ in range(count)]


def _data(cache: Path, *sources: DataSourceConfig, valid_fraction: float = 0.1) -> DataConfig:
    return DataConfig(sources=list(sources), cache_dir=str(cache), valid_fraction=valid_fraction)


def test_header_is_read_without_megatron(tmp_path: Path):
    prefix = write_megatron_dataset(tmp_path / "corpus", random_documents(7))
    header = read_header(prefix)
    assert (header.dtype, header.sequences, header.documents) == ("uint16", 7, 7)


def test_train_and_valid_split_the_documents_and_read_their_tokens(tmp_path: Path):
    docs = random_documents(20)
    prefix = write_megatron_dataset(tmp_path / "corpus", docs)
    (source,) = prepare_sources(_data(tmp_path / "cache", DataSourceConfig(name="mlm", megatron_prefix=prefix)), VOCAB)
    assert source.sequences == {"train": (0, 18), "valid": (18, 20)}  # the last 10% of the documents
    assert source.vocab_size == max(int(d.max()) for d in docs) + 1
    for split, part in (("train", docs[:18]), ("valid", docs[18:])):
        stream = np.concatenate(part)
        windows = source.windows(split, 16)
        assert len(windows) == (len(stream) - 1) // 16
        for i in range(len(windows)):  # documents back to back, windows sharing their boundary token
            assert np.array_equal(windows[i], stream[16 * i : 16 * i + 17])
    valid = np.concatenate(docs[18:])
    p = np.bincount(valid)[np.bincount(valid) > 0] / len(valid)
    assert source.unigram_entropy("valid") == pytest.approx(float(-(p * np.log(p)).sum()))


def test_blended_with_a_builtin_source(tmp_path: Path):
    prefix = write_megatron_dataset(tmp_path / "corpus", random_documents(30))
    cfg = _data(
        tmp_path / "cache",
        DataSourceConfig(name="mlm", megatron_prefix=prefix, weight=0.3),
        DataSourceConfig(name="builtin", inputs=["builtin"], weight=0.7),
    )
    mlm, builtin = prepare_sources(cfg, VOCAB)
    assert mlm.prefix("train") == prefix and builtin.prefix("train") != prefix
    assert builtin.vocab_size == VOCAB and len(builtin.windows("train", 64)) > 1000


def test_the_token_id_scan_is_cached_and_checks_the_vocabulary(tmp_path: Path):
    docs = random_documents(10, high=VOCAB)
    docs[3][5] = 9000  # one id past model=debug's embedding
    prefix = write_megatron_dataset(tmp_path / "corpus", docs)
    cfg = _data(tmp_path / "cache", DataSourceConfig(megatron_prefix=prefix))
    with pytest.raises(ValueError, match=r"^data.sources\[0\].megatron_prefix=.*token id 9000.*model.vocab_size=8192"):
        prepare_sources(cfg, VOCAB)
    assert scan_cache_path(cfg.cache_dir, prefix).is_file()
    # Scanned once where the job ran: the next launch refuses it before anything starts.
    with pytest.raises(ConfigError, match=r"^data.sources\[0\].megatron_prefix=.*9000"):
        _compose(tmp_path, f"data.sources=[{{megatron_prefix:'{prefix}'}}]")


def _compose(tmp_path: Path, *overrides: str):
    return compose_job(CommandLine(), ["model=debug", f"data.cache_dir={tmp_path / 'cache'}", *overrides])


@pytest.mark.parametrize("present", [(), (".bin",), (".idx",)])
def test_missing_files_are_one_line_naming_the_source(tmp_path: Path, present: tuple[str, ...]):
    for suffix in present:
        (tmp_path / f"corpus{suffix}").write_bytes(b"")
    missing = " and ".join(f"corpus{s}" for s in (".bin", ".idx") if s not in present)
    sources = f"data.sources=[{{inputs:[builtin]}},{{megatron_prefix:'{tmp_path / 'corpus'}',weight:0.5}}]"
    with pytest.raises(ConfigError, match=rf"^data.sources\[1\].megatron_prefix=\S+: {missing} not found$"):
        _compose(tmp_path, sources)


def test_a_file_that_is_not_a_megatron_index_is_refused(tmp_path: Path):
    (tmp_path / "corpus.bin").write_bytes(b"\0" * 64)
    (tmp_path / "corpus.idx").write_bytes(b"not an index at all, just text" * 4)
    with pytest.raises(ConfigError, match=r"^data.sources\[0\].megatron_prefix=.*not a megatron indexed-dataset"):
        _compose(tmp_path, f"data.sources=[{{megatron_prefix:'{tmp_path / 'corpus'}'}}]")


def test_inputs_and_a_prefix_together_are_refused(tmp_path: Path):
    prefix = write_megatron_dataset(tmp_path / "corpus", random_documents(4))
    with pytest.raises(ConfigError, match=r"^data.sources\[0\]: set inputs or megatron_prefix, not both$"):
        _compose(tmp_path, f"data.sources=[{{megatron_prefix:'{prefix}',inputs:[a.jsonl]}}]")


def test_a_truncated_bin_is_refused_at_build(tmp_path: Path):
    prefix = write_megatron_dataset(tmp_path / "corpus", random_documents(6))
    with open(prefix + ".bin", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(ValueError, match=r"^data.sources\[0\].megatron_prefix=.*truncated"):
        prepare_sources(_data(tmp_path / "cache", DataSourceConfig(megatron_prefix=prefix)), VOCAB)
