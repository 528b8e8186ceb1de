"""Text sources: the built-in corpus and JSONL files (plain, .gz or .xz), read with clear errors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import IO

BUILTIN = "builtin"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUILTIN_CORPUS = ASSETS_DIR / "corpus_en.jsonl.xz"


def resolve_input(name: str | Path) -> Path:
    """Map `builtin` to the shipped corpus and check that a file exists."""
    path = BUILTIN_CORPUS if str(name) == BUILTIN else Path(name)
    if not path.is_file():
        raise ValueError(f"input file not found: {path}")
    return path


def open_text(path: Path) -> IO[str]:
    """Open a text file, decompressing by suffix (.gz, .xz)."""
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    # Returned open on purpose: callers close it with their own `with` block.
    return opener(path, "rt", encoding="utf-8")


def iter_texts(path: Path, text_key: str = "text") -> Iterator[str]:
    """Yield the `text_key` field of every non-blank JSONL line; raise ValueError naming file and line."""
    with open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield _text_of(line, path, number, text_key)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not valid UTF-8 text ({exc.reason})") from None
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise ValueError(f"{path}: cannot read compressed data ({exc})") from None


def _text_of(line: str, path: Path, number: int, text_key: str) -> str:
    """Parse one JSONL line and return its text field."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or text_key not in record:
        raise ValueError(f"{path}:{number}: missing text key {text_key!r}")
    text = record[text_key]
    if not isinstance(text, str):
        raise ValueError(f"{path}:{number}: field {text_key!r} is {type(text).__name__}, not a string")
    return text


def count_records(path: Path) -> int:
    """Number of non-blank lines, i.e. documents, without parsing them."""
    with open_text(path) as handle:
        try:
            return sum(1 for line in handle if line.strip())
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not valid UTF-8 text ({exc.reason})") from None
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise ValueError(f"{path}: cannot read compressed data ({exc})") from None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes; memoised per (path, size, mtime) since cache lookups hash twice."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, read in chunks; size and mtime only take part in the memo key."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
