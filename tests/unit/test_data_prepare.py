"""Tests for bitcpm.data.prepare: splits, meta.json, caching and input errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import bitcpm.data.prepare as prepare_module
from bitcpm.data.dataset import TokenStream, TokenWindows
from bitcpm.data.prepare import dataset_cache_dir, load_prepared, prepare_dataset
from bitcpm.data.tokenizer import load_tokenizer

pytestmark = pytest.mark.quick

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "mu")


def _docs(n: int = 50) -> list[str]:
    # Varying lengths so that token counts distinguish which documents went where.
    return [f"Document {i}. " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 17)) for i in range(n)]


def _write_jsonl(path: Path, docs: list[str], key: str = "text") -> Path:
    path.write_text("".join(json.dumps({key: d, "id": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    return path


def _split_tokens(prefix: str) -> np.ndarray:
    stream = TokenStream(prefix)
    return stream.read(0, stream.total_tokens)


def test_prepare_splits_whole_documents_and_writes_meta(tmp_path: Path) -> None:
    docs = _docs()
    src = _write_jsonl(tmp_path / "docs.jsonl", docs)
    out = tmp_path / "prep"
    ds = prepare_dataset([str(src)], "builtin", out, valid_fraction=0.1)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["valid"]["documents"] == 5 and meta["splits"]["train"]["documents"] == 45
    assert meta["inputs"][0]["path"] == str(src) and len(meta["inputs"][0]["sha256"]) == 64
    assert meta["tokenizer"]["fingerprint"] == load_tokenizer("builtin").fingerprint
    assert (meta["vocab_size"], meta["dtype"], meta["text_key"]) == (8192, "uint16", "text")
    assert ds.prefix("valid") == str(out / "valid") and ds.vocab_size == 8192

    # Rebuild the expected streams: every document lands whole in exactly one split, eos-terminated.
    tok = load_tokenizer("builtin")
    encoded = [tok.encode(d) + [tok.eos_id] for d in docs]
    train, valid = _split_tokens(ds.prefix("train")), _split_tokens(ds.prefix("valid"))
    assert (ds.train_tokens, ds.valid_tokens) == (len(train), len(valid))
    assert len(train) + len(valid) == sum(map(len, encoded))
    valid_docs = [d for d in np.split(valid, np.flatnonzero(valid == tok.eos_id)[:-1] + 1)]
    train_docs = [d for d in np.split(train, np.flatnonzero(train == tok.eos_id)[:-1] + 1)]
    assert sorted(map(list, valid_docs + train_docs)) == sorted(encoded)
    # Train keeps the input order of its documents.
    assert [list(d) for d in train_docs] == [e for e in encoded if e in map(list, train_docs)]


def test_split_is_seeded(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "docs.jsonl", _docs())
    a = prepare_dataset([str(src)], "builtin", tmp_path / "a", 0.2, seed=1)
    b = prepare_dataset([str(src)], "builtin", tmp_path / "b", 0.2, seed=1)
    c = prepare_dataset([str(src)], "builtin", tmp_path / "c", 0.2, seed=2)
    assert np.array_equal(_split_tokens(a.prefix("valid")), _split_tokens(b.prefix("valid")))
    assert not np.array_equal(_split_tokens(a.prefix("valid")), _split_tokens(c.prefix("valid")))


def test_cache_hit_returns_without_rewriting(tmp_path: Path, monkeypatch) -> None:
    src = _write_jsonl(tmp_path / "docs.jsonl", _docs())
    root = tmp_path / "cache"
    out = dataset_cache_dir(root, [str(src)], "builtin", 0.1, "text")
    assert out.parent == root and len(out.name) == 16
    first = prepare_dataset([str(src)], "builtin", out, 0.1)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def forbidden(*args, **kwargs):
        raise AssertionError("cache hit must not tokenize again")

    monkeypatch.setattr(prepare_module, "load_tokenizer", forbidden)
    again = prepare_dataset([str(src)], "builtin", out, 0.1)
    assert again == first
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_cache_dir_depends_on_every_key_part(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "docs.jsonl", _docs())
    other = _write_jsonl(tmp_path / "other.jsonl", _docs(51))
    base = dataset_cache_dir(tmp_path, [str(src)], "builtin", 0.1, "text")
    assert dataset_cache_dir(tmp_path, [str(src)], "builtin", 0.1, "text") == base
    variants = [
        dataset_cache_dir(tmp_path, [str(other)], "builtin", 0.1, "text"),
        dataset_cache_dir(tmp_path, [str(src)], "builtin", 0.2, "text"),
        dataset_cache_dir(tmp_path, [str(src)], "builtin", 0.1, "body"),
        dataset_cache_dir(tmp_path, [str(src)], "builtin", 0.1, "text", seed=7),
    ]
    assert len({base, *variants}) == 5


def test_changed_input_invalidates_existing_output(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "docs.jsonl", _docs())
    out = tmp_path / "prep"
    first = prepare_dataset([str(src)], "builtin", out, 0.1)
    _write_jsonl(src, _docs(60))
    second = prepare_dataset([str(src)], "builtin", out, 0.1)
    assert second.train_tokens > first.train_tokens
    assert json.loads((out / "meta.json").read_text())["splits"]["train"]["documents"] == 54


def test_compressed_input_and_custom_text_key(tmp_path: Path) -> None:
    docs = _docs(20)
    plain = _write_jsonl(tmp_path / "docs.jsonl", docs, key="body")
    packed = tmp_path / "docs.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = prepare_dataset([str(plain)], "builtin", tmp_path / "a", 0.0, text_key="body")
    b = prepare_dataset([str(packed)], "builtin", tmp_path / "b", 0.0, text_key="body")
    assert a.train_tokens == b.train_tokens > 0 and a.valid_tokens == 0
    assert np.array_equal(_split_tokens(a.prefix("train")), _split_tokens(b.prefix("train")))
    assert len(TokenWindows(a.prefix("valid"), 4)) == 0 and len(TokenWindows(a.prefix("train"), 4)) > 0


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n')
    out = tmp_path / "prep"
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: invalid JSON"):
        prepare_dataset([str(src)], "builtin", out, 0.0)
    assert load_prepared(out) is None and not (out / "meta.json").exists()


def test_missing_text_key_and_missing_file(tmp_path: Path) -> None:
    src = tmp_path / "nokey.jsonl"
    src.write_text('{"text": "fine"}\n\n{"content": "x"}\n')
    with pytest.raises(ValueError, match=r"nokey\.jsonl:3: missing text key 'text'"):
        prepare_dataset([str(src)], "builtin", tmp_path / "prep", 0.0)
    with pytest.raises(ValueError, match=r"input file not found: .*absent\.jsonl"):
        prepare_dataset([str(tmp_path / "absent.jsonl")], "builtin", tmp_path / "prep", 0.0)


def test_truncated_bin_is_not_trusted(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "docs.jsonl", _docs())
    out = tmp_path / "prep"
    prepare_dataset([str(src)], "builtin", out, 0.1)
    assert load_prepared(out) is not None
    with open(out / "train.bin", "r+b") as handle:
        handle.truncate(10)
    assert load_prepared(out) is None


def test_each_data_seed_prepares_its_own_directory(tmp_path: Path) -> None:
    from bitcpm.config.data import DataConfig, DataSourceConfig
    from bitcpm.data.mixture import prepare_sources

    src = _write_jsonl(tmp_path / "docs.jsonl", _docs())

    def prefixes(seed: int) -> dict:
        cfg = DataConfig(sources=[DataSourceConfig(name="d", inputs=[str(src)])], cache_dir=str(tmp_path / "c"))
        cfg.seed = seed
        return prepare_sources(cfg)[0].prefixes

    first, second = prefixes(1), prefixes(2)
    assert Path(first["train"]).parent != Path(second["train"]).parent
    assert prefixes(1) == first and load_prepared(Path(first["train"]).parent) is not None  # not rewritten by seed 2
