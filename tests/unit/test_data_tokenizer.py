"""Tests for bitcpm.data.tokenizer: built-in tokenizer, loading rules, training."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bitcpm.data.tokenizer import (
    BUILTIN_TOKENIZER_DIR,
    load_tokenizer,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)

pytestmark = pytest.mark.quick

SAMPLES = [
    "The json module exposes an API familiar to users of the standard library.",
    "  leading spaces, trailing tabs\t\n\nand blank lines\n",
    "Unicode: naïve café — 景太郎 ✓ 🐍",
    "",
]


def test_builtin_round_trip_and_special_ids() -> None:
    tok = load_tokenizer("builtin")
    assert (tok.name, tok.vocab_size, tok.bos_id, tok.eos_id) == ("builtin", 8192, 0, 1)
    for text in SAMPLES:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.eos_id not in ids  # encode() must not add special tokens
        assert tok.decode(ids) == text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]
    # Trained on English prose, common words are single tokens and text compresses well.
    assert len(tok.encode(SAMPLES[0])) < len(SAMPLES[0]) / 3


def test_fingerprint_is_stable_and_content_based(tmp_path: Path) -> None:
    fp = tokenizer_fingerprint("builtin")
    assert fp == load_tokenizer("builtin").fingerprint and len(fp) == 64
    copy = tmp_path / "copy"
    shutil.copytree(BUILTIN_TOKENIZER_DIR, copy)
    assert tokenizer_fingerprint(copy) == fp
    (copy / "tokenizer_config.json").write_text('{"eos_token": "<pad>"}')
    assert tokenizer_fingerprint(copy) != fp


def test_hf_directory_reads_special_tokens_from_config(tmp_path: Path) -> None:
    shutil.copy(BUILTIN_TOKENIZER_DIR / "tokenizer.json", tmp_path / "tokenizer.json")
    config = {"bos_token": {"content": "<pad>"}, "eos_token": "<unk>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.name) == (3, 2, tmp_path.name)


def test_hf_directory_without_config_falls_back_to_common_eos(tmp_path: Path) -> None:
    shutil.copy(BUILTIN_TOKENIZER_DIR / "tokenizer.json", tmp_path / "tokenizer.json")
    tok = load_tokenizer(tmp_path)
    assert tok.eos_id == 1 and tok.bos_id is None


def test_sentencepiece_without_transformers_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tokenizer.model").write_bytes(b"not really a model")
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ValueError, match="install 'transformers'"):
        load_tokenizer(tmp_path)


def test_missing_tokenizer_is_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(ValueError, match="neither tokenizer.json nor tokenizer.model"):
        load_tokenizer(tmp_path)


def test_training_is_deterministic(tmp_path: Path) -> None:
    texts = [f"document {i}: the quick brown fox jumps over the lazy dog {i * 7}" for i in range(200)]
    a = train_bpe_tokenizer(iter(texts), 300, tmp_path / "a")
    b = train_bpe_tokenizer(iter(texts), 300, tmp_path / "b")
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    meta = json.loads((a / "bitcpm_tokenizer.json").read_text())
    assert (meta["vocab_size"], meta["bos_id"], meta["eos_id"]) == (300, 0, 1)
    tok = load_tokenizer(a)
    assert tok.vocab_size == 300 and tok.decode(tok.encode(texts[3])) == texts[3]


def test_tokenizer_and_prepare_import_without_torch() -> None:
    code = (
        "import sys, bitcpm.data.tokenizer, bitcpm.data.prepare; "
        "sys.exit(int(any(m in sys.modules for m in ('torch', 'megatron'))))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
