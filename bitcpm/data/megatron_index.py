"""Existing Megatron-LM datasets (PREFIX.bin + PREFIX.idx, as Megatron-LM's tools/preprocess_data.py writes them):
the index header read torch-free for preflight, and the held-out split such a source gets.

Header of megatron-core's `MMIDIDX` index (megatron/core/datasets/indexed_dataset.py, `_IndexWriter`): 9 magic
bytes, a little-endian uint64 version (1), a uint8 dtype code, uint64 sequence count, uint64 document-index count
(documents + 1: the index starts with a 0).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from bitcpm.config.data import DataConfig

MAGIC = b"MMIDIDX\x00\x00"
# megatron.core.datasets.indexed_dataset.DType: code -> (numpy dtype name, largest token id it can hold)
DTYPE_CODES = {
    1: ("uint8", 2**8 - 1),
    2: ("int8", 2**7 - 1),
    3: ("int16", 2**15 - 1),
    4: ("int32", 2**31 - 1),
    5: ("int64", 2**63 - 1),
    8: ("uint16", 2**16 - 1),
}


@dataclass(frozen=True)
class IndexHeader:
    """What the first 35 bytes of a megatron .idx say."""

    dtype: str
    sequences: int
    documents: int


def read_header(prefix: str) -> IndexHeader:
    """Parse PREFIX.idx's header; ValueError (one line) when the files are missing or not megatron's format."""
    idx, binary = Path(prefix + ".idx"), Path(prefix + ".bin")
    missing = [p.name for p in (binary, idx) if not p.is_file()]
    if missing:
        raise ValueError(f"{' and '.join(missing)} not found")
    with open(idx, "rb") as handle:
        head = handle.read(len(MAGIC) + 8 + 1 + 8 + 8)
    if len(head) < 34 or head[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{idx} is not a megatron indexed-dataset index (no MMIDIDX header)")
    version, code, sequences, doc_index = struct.unpack("<QBQQ", head[len(MAGIC) :])
    if version != 1 or code not in DTYPE_CODES:
        raise ValueError(f"{idx}: unsupported index version {version} or token dtype code {code}")
    return IndexHeader(DTYPE_CODES[code][0], sequences, max(0, doc_index - 1))


def held_out_documents(documents: int, valid_fraction: float) -> int:
    """Documents at the end of a Megatron-LM dataset that form its validation split (Megatron-LM's --split is
    contiguous too): at least one on each side."""
    if documents < 2:
        raise ValueError(f"need at least 2 documents for a validation split, got {documents}")
    return min(max(1, round(valid_fraction * documents)), documents - 1)


def check_sizes(prefix: str, header: IndexHeader) -> None:
    """Both files as long as the header says (a truncated copy is found here, before launch): the .idx holds its
    arrays (sequence lengths int32, pointers int64, document indices int64, optional int8 modes), the .bin ends
    where the last sequence does."""
    idx, binary = Path(prefix + ".idx"), Path(prefix + ".bin")
    sequences, header_bytes = header.sequences, len(MAGIC) + 8 + 1 + 8 + 8
    arrays = header_bytes + 12 * sequences + 8 * (header.documents + 1)
    if idx.stat().st_size not in (arrays, arrays + sequences):
        raise ValueError(f"{idx} holds {idx.stat().st_size} bytes, its header promises {arrays} (truncated?)")
    if sequences == 0:
        return
    with open(idx, "rb") as handle:
        handle.seek(header_bytes + 4 * (sequences - 1))
        (length,) = struct.unpack("<i", handle.read(4))
        handle.seek(header_bytes + 4 * sequences + 8 * (sequences - 1))
        (pointer,) = struct.unpack("<q", handle.read(8))
    itemsize = {"uint8": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "int64": 8}[header.dtype]
    expected = pointer + length * itemsize
    if binary.stat().st_size != expected:
        raise ValueError(f"{binary} holds {binary.stat().st_size} bytes, its index {expected} (truncated?)")


def check_megatron_source(prefix: str, key: str) -> IndexHeader:
    """Preflight of one source: both files there, a readable header and the sizes it promises; errors name the
    config key."""
    try:
        header = read_header(prefix)
        check_sizes(prefix, header)
    except (OSError, ValueError, struct.error) as exc:
        raise ValueError(f"{key}={prefix}: {exc}") from None
    if header.documents < 2:
        raise ValueError(f"{key}={prefix}: {header.documents} documents, need at least 2 (train and validation)")
    return header


def scan_cache_path(cache_dir: str | Path, prefix: str) -> Path:
    """Where the token-id scan of a Megatron-LM dataset is kept, keyed by its path, sizes and modification times."""
    parts = [str(Path(prefix).resolve())]
    for suffix in (".bin", ".idx"):
        stat = Path(prefix + suffix).stat()
        parts += [str(stat.st_size), str(stat.st_mtime_ns)]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return Path(cache_dir) / "megatron" / f"{key}.json"


def cached_max_token_id(cache_dir: str | Path, prefix: str) -> int | None:
    """The largest token id of a dataset scanned before (None: not scanned yet, or changed since)."""
    try:
        return int(json.loads(scan_cache_path(cache_dir, prefix).read_text(encoding="utf-8"))["max_token_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def vocabulary_error(key: str, prefix: str, max_token_id: int, vocab_size: int) -> str | None:
    """One line when a dataset's token ids do not fit the model's embedding, else None."""
    if max_token_id < vocab_size:
        return None
    return f"{key}={prefix}: holds token id {max_token_id}, which does not fit model.vocab_size={vocab_size}"


def preflight_sources(data: DataConfig, vocab_size: int) -> None:
    """Before launch: every megatron_prefix has its two files and a megatron index, and, where it was scanned
    before, token ids that fit model.vocab_size (a first scan happens where the job runs, once)."""
    for i, src in enumerate(data.sources):
        if src.megatron_prefix is None:
            continue
        key = f"data.sources[{i}].megatron_prefix"
        if list(src.inputs) not in ([], ["builtin"]):
            raise ValueError(f"data.sources[{i}]: set inputs or megatron_prefix, not both")
        check_megatron_source(src.megatron_prefix, key)
        largest = cached_max_token_id(data.cache_dir, src.megatron_prefix)
        if largest is not None and (message := vocabulary_error(key, src.megatron_prefix, largest, vocab_size)):
            raise ValueError(message)
