"""Local jsonl spool of tracking records that could not reach the tracking server yet.

Layout: a header line ``{"bitcpm_spool": 1, "run_id": ..., "start": ...}`` naming the run the records
belong to (or, before the run exists, how to create it), then one record per line, each with a
sequence number ``seq`` that orders replay. Every write is fsync'd, so a crash loses at most the
line being written, and a torn last line is skipped on load.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPOOL_FORMAT = 1
REJECTED_SUFFIX = ".rejected"
RECORD_KINDS = ("metrics", "tags", "text", "artifact", "finish")

# One spooled record: {"seq": int, "kind": one of RECORD_KINDS, ...kind-specific fields}.
Record = dict[str, Any]
# (metrics, step, timestamp in ms since the epoch): metrics keep the time they were measured at.
MetricPoint = tuple[Mapping[str, float | None], int, int]


@dataclass
class RunSpec:
    """Everything needed to create (or resume) a run later: what open_tracker was asked for."""

    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    resume_run_id: str | None = None
    # Tags the created run so a retry after a lost reply finds it instead of creating a twin.
    open_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSpec:
        """Inverse of dataclasses.asdict, tolerant of fields a later version may add."""
        return cls(
            run_name=str(data.get("run_name", "")),
            params={str(k): str(v) for k, v in dict(data.get("params") or {}).items()},
            tags={str(k): str(v) for k, v in dict(data.get("tags") or {}).items()},
            resume_run_id=data.get("resume_run_id"),
            open_id=str(data.get("open_id") or uuid.uuid4().hex),
        )


def _fsync_dir(path: Path) -> None:
    # The rename or creation of a file is durable only once its directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _line(data: Mapping[str, Any]) -> str:
    # NaN and inf stay representable (Python's json reads its own NaN/Infinity back).
    return json.dumps(data, separators=(",", ":")) + "\n"


def append_lines(path: Path, items: Iterable[Mapping[str, Any]]) -> None:
    """Append json lines to `path` (creating it and its directory) and fsync them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.writelines(_line(item) for item in items)
        out.flush()
        os.fsync(out.fileno())


class Spool:
    """In-memory mirror of one spool file; thread-safe. The file exists only while it holds something.

    "Something" is records, a run still to create (`start`), or a `pinned` run id: the id of a run
    created after open_tracker returned, kept on disk until close so a crash cannot lose it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.run_id: str | None = None
        self.start: RunSpec | None = None
        self.pinned = False
        self._records: list[Record] = []
        self._seqs: set[int] = set()
        self._lock = threading.RLock()

    # --- reading -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Spool:
        """The spool at `path` (empty when the file does not exist); unreadable lines are skipped."""
        spool = cls(path)
        try:
            text = spool.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return spool
        skipped = 0
        records: list[Record] = []
        for number, raw in enumerate(text.splitlines()):
            try:
                data = json.loads(raw)
            except ValueError:
                skipped += 1  # a line torn by a crash mid-write
                continue
            if number == 0 and isinstance(data, dict) and "bitcpm_spool" in data:
                spool.run_id = data.get("run_id")
                spool.start = RunSpec.from_json(data["start"]) if data.get("start") else None
                spool.pinned = bool(data.get("pinned"))
            elif isinstance(data, dict) and data.get("kind") in RECORD_KINDS and isinstance(data.get("seq"), int):
                records.append(data)
            else:
                skipped += 1
        if skipped:
            log.warning("skipped %d unreadable line(s) in tracking spool %s", skipped, spool.path)
        spool._insert(records)
        return spool

    @property
    def records(self) -> list[Record]:
        """A snapshot of the records in replay order."""
        with self._lock:
            return list(self._records)

    @property
    def pending(self) -> bool:
        """Whether anything still has to reach the server (records or the run itself)."""
        with self._lock:
            return bool(self._records) or self.start is not None

    def next_seq(self) -> int:
        """A sequence number above every record held."""
        with self._lock:
            return max(self._seqs, default=-1) + 1

    # --- writing -----------------------------------------------------------------------------------

    def _insert(self, records: Iterable[Record]) -> bool:
        """Add records not held yet; False when one sorts before a held record (the file needs a rewrite)."""
        in_order = True
        for record in records:
            if record["seq"] in self._seqs:
                continue
            if self._records and record["seq"] < self._records[-1]["seq"]:
                in_order = False
            self._records.append(record)
            self._seqs.add(record["seq"])
        if not in_order:
            self._records.sort(key=lambda r: r["seq"])
        return in_order

    def append(self, records: Sequence[Record]) -> None:
        """Add records durably (a record whose seq is already held is ignored)."""
        with self._lock:
            fresh = [r for r in records if r["seq"] not in self._seqs]
            if not fresh:
                return
            existed = self.path.exists()
            if self._insert(fresh) and existed:
                append_lines(self.path, fresh)
            else:
                self._rewrite()

    def discard(self, seqs: Iterable[int]) -> None:
        """Forget records that reached the server (or were set aside), rewriting the file."""
        gone = set(seqs)
        with self._lock:
            if not gone & self._seqs:
                return
            self._records = [r for r in self._records if r["seq"] not in gone]
            self._seqs -= gone
            self._rewrite()

    def set_header(self, *, run_id: str | None, start: RunSpec | None, pinned: bool) -> None:
        """Record which run the records belong to (or how to create it) and rewrite the file."""
        with self._lock:
            self.run_id, self.start, self.pinned = run_id, start, pinned
            self._rewrite()

    def _header(self) -> dict[str, Any]:
        start = asdict(self.start) if self.start is not None else None
        return {"bitcpm_spool": SPOOL_FORMAT, "run_id": self.run_id, "start": start, "pinned": self.pinned}

    def _rewrite(self) -> None:
        """Replace the file atomically with the current state, or remove it when it would say nothing."""
        if not (self._records or self.start is not None or (self.pinned and self.run_id)):
            if self.path.exists():
                self.path.unlink()
                _fsync_dir(self.path.parent)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(_line(self._header()))
                out.writelines(_line(r) for r in self._records)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)

    def set_aside(self, destination: Path) -> None:
        """Move the file to `destination` and empty this spool (records of another run)."""
        with self._lock:
            if self.path.exists():
                os.replace(self.path, destination)
                _fsync_dir(self.path.parent)
            self.run_id, self.start, self.pinned = None, None, False
            self._records, self._seqs = [], set()


def rejected_path(spool_path: Path) -> Path:
    """Where records the server refused for good are kept (next to the spool)."""
    return spool_path.with_name(spool_path.stem + REJECTED_SUFFIX + spool_path.suffix)
