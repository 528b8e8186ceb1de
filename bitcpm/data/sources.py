"""Text sources: the built-in corpus and JSONL files (plain, .gz or .xz), read with clear errors, and checked
before any work (check_jsonl: what an entry point runs on every input it is given)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bitcpm.config.arguments import InputError, Kind, need_file

BUILTIN = "builtin"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUILTIN_CORPUS = ASSETS_DIR / "corpus_en.jsonl.xz"
# Inputs up to this size are read whole before any work starts (every record parsed, compressed streams to their
# end: a fraction of a second); larger ones get their first records and, uncompressed, their last line checked,
# since reading them whole is the preparation itself.
FULL_CHECK_BYTES = 16 << 20
SAMPLE_BYTES = 1 << 20
MAGIC = {".gz": (b"\x1f\x8b", "gzip"), ".xz": (b"\xfd7zXZ\x00", "xz")}
XZ_FOOTER = b"YZ"


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


def _check_record(line: str, path: Path, number: int | None, text_key: str | None) -> None:
    """One JSONL line: a JSON object with a string `text_key` field (any object when text_key is None)."""
    where = f"{path}:{number}" if number is not None else f"{path}: its last line"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        truncated = " (the file looks truncated)" if number is None else ""
        raise InputError(f"{where}: invalid JSON ({exc.msg}){truncated}") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: a JSON {type(record).__name__}, expected an object with a text field")
    if text_key is not None:
        if text_key not in record:
            raise InputError(f"{where}: missing text key {text_key!r}")
        if not isinstance(record[text_key], str):
            raise InputError(f"{where}: field {text_key!r} is {type(record[text_key]).__name__}, not a string")


def _scan(path: Path, text_key: str | None, limit: int | None) -> int:
    """Parse the records of the first `limit` characters (all when None); returns how many there were."""
    count = 0
    with open_text(path) as handle:
        try:
            if limit is None:
                lines = enumerate(handle, start=1)
            else:
                head = handle.read(limit)
                complete = head if len(head) < limit else head[: head.rfind("\n") + 1]
                lines = enumerate(complete.splitlines(), start=1)
            for number, line in lines:
                if line.strip():
                    _check_record(line, path, number, text_key)
                    count += 1
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid UTF-8 text ({exc.reason})") from None
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise InputError(f"{path}: cannot read compressed data ({exc})") from None
    return count


def _check_tail(path: Path, size: int, text_key: str | None) -> None:
    """The end of a large input: an uncompressed file's last line parses, an xz stream has its footer."""
    with open(path, "rb") as handle:
        handle.seek(max(0, size - SAMPLE_BYTES))
        tail = handle.read()
    if path.suffix == ".xz":
        if not tail.endswith(XZ_FOOTER):
            raise InputError(f"{path}: the xz stream has no end (the file looks truncated)")
        return
    if path.suffix == ".gz":
        return  # a gzip stream proves it is whole only when read to its end (the preparation does)
    lines = [ln for ln in tail.split(b"\n")[1:] if ln.strip()]
    if lines:
        try:
            last = lines[-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid UTF-8 text ({exc.reason})") from None
        _check_record(last, path, None, text_key)


@functools.lru_cache(maxsize=256)
def _checked(path: str, size: int, mtime_ns: int, text_key: str | None, shown: str) -> int | None:
    """check_jsonl's work, memoised per file version (a multirun's members share their inputs); messages name
    the file as `shown` (as the user wrote it)."""
    file = Path(shown)
    with open(file, "rb") as handle:
        start = handle.read(8)
    magic, fmt = MAGIC.get(file.suffix, (None, None))
    if magic is not None and not start.startswith(magic):
        raise InputError(f"{file}: not {fmt} data (the name ends in {file.suffix})")
    if size <= FULL_CHECK_BYTES:
        count = _scan(file, text_key, None)
        if count == 0:
            raise InputError(f"{file}: holds no documents (blank lines only)")
        return count
    if _scan(file, text_key, SAMPLE_BYTES) == 0 and file.suffix not in MAGIC:
        raise InputError(f"{file}: no complete JSON line in its first {SAMPLE_BYTES >> 20} MiB")
    _check_tail(file, size, text_key)
    return None


def check_jsonl(name: str | Path, text_key: str | None = None) -> int | None:
    """Check a jsonl input before any work: a readable, non-empty file of JSON objects (with a string `text_key`
    field when given), whole; returns its number of documents, or None when it is too large to count up front
    (its first records and end are checked). InputError names the file, and the line where one is bad."""
    if str(name) == BUILTIN:
        return None
    path = need_file(name, "jsonl file")
    stat = path.stat()
    return _checked(str(path.resolve()), stat.st_size, stat.st_mtime_ns, text_key, str(path))


def _jsonl_argument(value: str) -> str:
    check_jsonl(value)
    return value


JSONL = Kind("jsonl", _jsonl_argument)
"""A jsonl input (or builtin) on a command line; its text key is checked once the whole line is read."""
