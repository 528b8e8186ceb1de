"""Tokenize JSONL corpora into megatron-core indexed datasets (train/valid split), with caching.

Usage::

    python -m bitcpm.data.prepare --input a.jsonl b.jsonl.gz --tokenizer builtin --output DIR \
        [--valid-fraction 0.02] [--text-key text] [--seed 1234]

`--input builtin` selects the shipped corpus. `DIR/meta.json` is written last and atomically; a
directory without a matching meta.json is never trusted and is rebuilt. Every input is checked before anything is
written (bitcpm.data.sources.check_jsonl); a preparation that fails part-way removes what it wrote.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitcpm.config.arguments import OUTPUT_DIR, OneLineParser, number
from bitcpm.config.arguments import text as name_of
from bitcpm.config.ranges import SEED, Range
from bitcpm.data.indexed import indexed_dataset_module
from bitcpm.data.job_progress import DataProgress, say
from bitcpm.data.sources import BUILTIN, JSONL, check_jsonl, count_records, file_sha256, iter_texts, resolve_input
from bitcpm.data.tokenizer import TOKENIZER, Tokenizer, load_tokenizer, tokenizer_fingerprint

# Named explicitly: under `python -m` __name__ is "__main__", outside the "bitcpm" logger tree.
logger = logging.getLogger("bitcpm.data.prepare")

SPLITS = ("train", "valid")
META_FILE = "meta.json"
FORMAT = "bitcpm-prepared-v1"
# uint16 halves disk and page-cache use; the margin keeps ids clear of the type's maximum.
UINT16_VOCAB_LIMIT = 65500
# Small enough that progress advances a few dozen times over the built-in corpus; large enough to keep the
# tokenizer's batch parallelism busy.
BATCH_CHARS = 250_000


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset directory with its train/valid indexed datasets."""

    path: Path
    vocab_size: int
    train_tokens: int
    valid_tokens: int

    def prefix(self, split: str) -> str:
        """megatron path prefix (without .bin/.idx) of `split` ('train' or 'valid')."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return str(self.path / split)

    @classmethod
    def from_meta(cls, path: Path, meta: dict[str, Any]) -> PreparedDataset:
        """Build from a parsed meta.json."""
        splits = meta["splits"]
        return cls(Path(path), meta["vocab_size"], splits["train"]["tokens"], splits["valid"]["tokens"])


def token_dtype(vocab_size: int) -> type[np.unsignedinteger] | type[np.signedinteger]:
    """Smallest on-disk token dtype for a vocabulary."""
    return np.uint16 if vocab_size < UINT16_VOCAB_LIMIT else np.int32


def _cache_key(input_hashes: Sequence[str], fingerprint: str, valid_fraction: float, text_key: str, seed: int) -> str:
    """sha256 of everything that determines the prepared bytes."""
    payload = {
        "format": FORMAT,
        "inputs": list(input_hashes),
        "tokenizer": fingerprint,
        "valid_fraction": float(valid_fraction),
        "text_key": text_key,
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _key_for(inputs: Sequence[str], tokenizer: str, valid_fraction: float, text_key: str, seed: int) -> str:
    """Cache key computed from file contents (not names), so renamed copies still hit."""
    hashes = [file_sha256(resolve_input(name)) for name in inputs]
    return _cache_key(hashes, tokenizer_fingerprint(tokenizer), valid_fraction, text_key, seed)


def dataset_cache_dir(
    cache_root: Path,
    inputs: Sequence[str],
    tokenizer: str,
    valid_fraction: float,
    text_key: str = "text",
    seed: int = 1234,
) -> Path:
    """`cache_root/<short key>`: one directory per distinct (inputs, tokenizer, split, text_key, seed)."""
    return Path(cache_root) / _key_for(inputs, tokenizer, valid_fraction, text_key, seed)[:16]


def load_prepared(output_dir: Path, key: str | None = None) -> PreparedDataset | None:
    """The dataset in `output_dir` if its meta.json is complete (and matches `key`), else None."""
    meta_path = Path(output_dir) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or (key is not None and meta.get("key") != key):
            return None
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            prefix = Path(output_dir) / split
            # A truncated .bin (e.g. disk full on another host) must not pass as complete.
            expected = meta["splits"][split]["tokens"] * itemsize
            if prefix.with_suffix(".bin").stat().st_size != expected or not prefix.with_suffix(".idx").is_file():
                return None
        return PreparedDataset.from_meta(Path(output_dir), meta)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _valid_mask(num_documents: int, valid_fraction: float, seed: int) -> np.ndarray:
    """Seeded choice of whole documents for the held-out split (at least one each side when >0)."""
    mask = np.zeros(num_documents, dtype=bool)
    if valid_fraction <= 0:
        return mask
    if num_documents < 2:
        raise ValueError(f"{num_documents} document(s): a validation split needs at least 2")
    num_valid = min(max(1, round(valid_fraction * num_documents)), num_documents - 1)
    mask[np.random.default_rng(seed).choice(num_documents, size=num_valid, replace=False)] = True
    return mask


def _batches(paths: Sequence[Path], text_key: str) -> Iterator[list[str]]:
    """Documents of all inputs in order, grouped into batches of about BATCH_CHARS characters."""
    batch: list[str] = []
    size = 0
    for path in paths:
        for text in iter_texts(path, text_key):
            batch.append(text)
            size += len(text)
            if size >= BATCH_CHARS:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def _write_splits(
    paths: Sequence[Path], tok: Tokenizer, output_dir: Path, mask: np.ndarray, text_key: str
) -> dict[str, dict[str, int]]:
    """Tokenize every document, append eos, and write train/valid .bin/.idx files."""
    builder_class = indexed_dataset_module().IndexedDatasetBuilder
    dtype = token_dtype(tok.vocab_size)
    builders = {split: builder_class(str(output_dir / f"{split}.bin"), dtype=dtype) for split in SPLITS}
    counts = {split: {"documents": 0, "tokens": 0} for split in SPLITS}
    index = 0
    progress = DataProgress(f"tokenizing into {output_dir}", len(mask), "documents")
    try:
        for batch in _batches(paths, text_key):
            progress.update(len(batch), f"{sum(c['tokens'] for c in counts.values()):,} tokens")
            for ids in tok.encode_batch(batch):
                split = "valid" if mask[index] else "train"
                index += 1
                if not ids:
                    continue  # empty documents would only contribute a lone eos
                ids.append(tok.eos_id)
                builders[split].add_document(np.asarray(ids, dtype=dtype), [len(ids)])
                counts[split]["documents"] += 1
                counts[split]["tokens"] += len(ids)
    finally:
        for split, builder in builders.items():
            builder.finalize(str(output_dir / f"{split}.idx"))
    progress.close(f"{counts['train']['tokens']:,} train + {counts['valid']['tokens']:,} valid tokens")
    return counts


def check_inputs(inputs: Sequence[str], valid_fraction: float, text_key: str) -> None:
    """Every input whole and holding `text_key` texts, and enough documents for the validation split, before
    anything is written (ValueError naming the file, and the line where one is bad)."""
    counts = [check_jsonl(name, text_key) for name in inputs]
    if valid_fraction > 0 and None not in counts and sum(counts) < 2:  # type: ignore[arg-type]
        total = sum(counts)  # type: ignore[arg-type]
        raise ValueError(f"{', '.join(map(str, inputs))}: {total} document(s): a validation split needs at least 2")


def _discard(output_dir: Path, created: bool) -> None:
    """What a failed preparation wrote: the directory it created, or its split files in an existing one."""
    if created:
        shutil.rmtree(output_dir, ignore_errors=True)
        return
    for split in SPLITS:
        for suffix in (".bin", ".idx"):
            (output_dir / f"{split}{suffix}").unlink(missing_ok=True)


def prepare_dataset(
    inputs: list[str],
    tokenizer: str,
    output_dir: Path,
    valid_fraction: float,
    text_key: str = "text",
    seed: int = 1234,
) -> PreparedDataset:
    """Tokenize `inputs` into `output_dir`; return at once if an identical preparation is already there."""
    if not inputs:
        raise ValueError("no input files given")
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    output_dir = Path(output_dir)
    paths = [resolve_input(name) for name in inputs]
    check_inputs(inputs, valid_fraction, text_key)
    hashes = [file_sha256(path) for path in paths]
    key = _cache_key(hashes, tokenizer_fingerprint(tokenizer), valid_fraction, text_key, seed)
    cached = load_prepared(output_dir, key)
    if cached is not None:
        logger.info("reusing prepared dataset %s", output_dir)
        return cached
    # Trials that start together on a fresh cache: one prepares, the others wait and then read its result (a second
    # writer would truncate the files the first one's readers already map).
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = output_dir.parent / f".{output_dir.name}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = load_prepared(output_dir, key)
        if cached is not None:
            return cached
        try:
            return _prepare(paths, inputs, hashes, key, tokenizer, output_dir, valid_fraction, text_key, seed)
        except BaseException:
            lock_path.unlink(missing_ok=True)  # a failed preparation leaves the cache as it found it
            raise


def _prepare(
    paths: list[Path],
    inputs: list[str],
    hashes: list[str],
    key: str,
    tokenizer: str,
    output_dir: Path,
    valid_fraction: float,
    text_key: str,
    seed: int,
) -> PreparedDataset:
    start = time.perf_counter()
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    # Remove a stale meta.json first: from here on the directory is incomplete until the final replace.
    (output_dir / META_FILE).unlink(missing_ok=True)
    say(f"preparing {', '.join(str(name) for name in inputs)} with tokenizer {tokenizer} (first use; cached after)")
    try:
        tok = load_tokenizer(tokenizer)
        num_documents = sum(count_records(path) for path in paths)
        try:
            mask = _valid_mask(num_documents, valid_fraction, seed)
        except ValueError as exc:
            raise ValueError(f"{', '.join(map(str, inputs))}: {exc}") from None
        counts = _write_splits(paths, tok, output_dir, mask, text_key)
    except BaseException:
        _discard(output_dir, created)
        raise
    meta = {
        "format": FORMAT,
        "key": key,
        "inputs": [
            {"path": BUILTIN if str(name) == BUILTIN else str(name), "sha256": digest}
            for name, digest in zip(inputs, hashes, strict=True)
        ],
        "tokenizer": {
            "spec": str(tokenizer),
            "name": tok.name,
            "fingerprint": tok.fingerprint,
            "eos_id": tok.eos_id,
            "bos_id": tok.bos_id,
        },
        "vocab_size": tok.vocab_size,
        "dtype": np.dtype(token_dtype(tok.vocab_size)).name,
        "valid_fraction": valid_fraction,
        "text_key": text_key,
        "seed": seed,
        "splits": counts,
        "seconds": round(time.perf_counter() - start, 3),
    }
    tmp = output_dir / f"{META_FILE}.tmp.{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, output_dir / META_FILE)
    logger.info("prepared %s in %.1fs: %s", output_dir, meta["seconds"], counts)
    return PreparedDataset.from_meta(output_dir, meta)


def parser() -> OneLineParser:
    """The command line; every argument's kind is checked as it is read."""
    p = OneLineParser(prog="python -m bitcpm.data.prepare", description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", type=JSONL, required=True, help="JSONL files (.gz/.xz ok) or 'builtin'")
    p.add_argument("--tokenizer", type=TOKENIZER, required=True, help="'builtin' or a tokenizer directory")
    p.add_argument("--output", type=OUTPUT_DIR, required=True, help="output directory")
    p.add_argument("--valid-fraction", type=number(float, Range(0, 1, hi_open=True)), default=0.02)
    p.add_argument("--text-key", type=name_of("JSON field name"), default="text")
    p.add_argument("--seed", type=number(int, SEED), default=1234)
    return p


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = parser()
    args = p.parse_args(argv)
    # Our progress lines only; megatron's per-file INFO chatter stays hidden.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("bitcpm").setLevel(logging.INFO)
    try:
        check_inputs(args.input, args.valid_fraction, args.text_key)
    except ValueError as exc:
        p.error(f"argument --input: {exc}")
    try:
        prepared = prepare_dataset(
            args.input, args.tokenizer, args.output, args.valid_fraction, args.text_key, args.seed
        )
    except ValueError as exc:
        p.exit(2, f"{p.prog}: error: {' '.join(str(exc).split())}\n")
    print(
        json.dumps(
            {
                "path": str(prepared.path),
                "train_tokens": prepared.train_tokens,
                "valid_tokens": prepared.valid_tokens,
                "vocab_size": prepared.vocab_size,
            }
        )
    )


if __name__ == "__main__":
    main()
