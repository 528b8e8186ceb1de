"""What a resilient run still owes the tracking server, kept beside RUN_DIR/metrics.jsonl, and sending it there.

The metrics need no second copy: a resilient run appends every metric, with its step and timestamp, to
RUN_DIR/metrics.jsonl (append_metrics), so the metrics still owed are that file's lines from a byte offset on. The
spool (RUN_DIR/mlflow_spool.jsonl) holds what the file cannot: that offset, the run it all belongs to (or, before
the run exists, how to create it), and the other records in the order they were logged (tags, text and file
artifacts, the end of the run). Layout: a header line ``{"bitcpm_spool": 1, "run_id": ..., "start": ...,
"pinned": ..., "metrics_sent": ...}``, then one record per line. The file is replaced atomically on every change
and exists only while something is owed (or a late-created run's id is pinned).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

SPOOL_FORMAT = 1
METRICS_FILE = "metrics.jsonl"
# The key of a metrics.jsonl line that holds when it was logged (ms since the epoch), beside "step".
TIMESTAMP_KEY = "timestamp_ms"
REJECTED_SUFFIX = ".rejected"
RECORD_KINDS = ("tags", "text", "artifact", "finish")
# metrics.jsonl lines per request group while catching up (MlflowTracker splits them into MLflow-sized batches).
CHUNK_LINES = 1000
# 4xx answers that can pass (expired credentials, rate limits, proxy timeouts) are retried like outages.
_RETRYABLE_HTTP = frozenset({401, 403, 408, 429})

# One spooled record: {"kind": one of RECORD_KINDS, ...kind-specific fields}.
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
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class ReplayTarget(Protocol):
    """One open run that owed records can be sent to (MlflowTracker is one)."""

    @property
    def run_id(self) -> str | None: ...
    def log_metric_points(self, points: Iterable[MetricPoint]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...


class RunOpener(Protocol):
    """Creates, resumes or attaches to runs of one tracking server (MlflowRunOpener is one)."""

    @property
    def uri(self) -> str: ...
    def open_run(self, spec: RunSpec, *, retry: bool = False) -> ReplayTarget: ...
    def attach_run(self, run_id: str) -> ReplayTarget: ...


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot help: the server understood the request and refused it, or a file is gone."""
    if isinstance(exc, FileNotFoundError | ValueError):
        return True
    status = getattr(exc, "get_http_status_code", None)
    if not callable(status):
        return False
    try:
        code = int(status())
    except (TypeError, ValueError):
        return False
    return 400 <= code < 500 and code not in _RETRYABLE_HTTP


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def describe(exc: BaseException) -> str:
    """A short reason for a failed request (MLflow's messages embed a whole urllib3 traceback summary)."""
    text = str(exc)
    found = _ERRNO.search(text)
    if found:
        return found.group(0).strip()
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "timed out"
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def say(message: str) -> None:
    """A tracking warning: a line on stderr, flushed (they come from a thread)."""
    print(message, file=sys.stderr, flush=True)


def append_metrics(path: Path, metrics: Mapping[str, float | None], step: int) -> int:
    """Append {"step", "timestamp_ms", <metric>: value} to a metrics.jsonl (None values left out); returns its end.

    The line goes out in one write when the file closes, so a killed process keeps every line it logged.
    """
    line = {"step": int(step), TIMESTAMP_KEY: int(time.time() * 1000)}
    line |= {str(k): float(v) for k, v in metrics.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        # NaN and inf stay representable (Python's json reads its own NaN/Infinity back).
        out.write(json.dumps(line).encode() + b"\n")
        return out.tell()


def read_metric_lines(path: Path, start: int, end: int, limit: int | None = None) -> list[tuple[int, Record | None]]:
    """metrics.jsonl lines between byte offsets: (the offset after the line, the line or None if unusable)."""
    lines: list[tuple[int, Record | None]] = []
    if not path.exists():
        return lines
    with path.open("rb") as source:
        source.seek(start)
        while start < end and (limit is None or len(lines) < limit):
            raw = source.readline(end - start)
            if not raw:  # the file is shorter than `end`
                break
            start += len(raw)
            try:
                line = json.loads(raw)
            except ValueError:  # torn by a crash mid-write
                line = None
            usable = isinstance(line, dict) and isinstance(line.get("step"), int) and TIMESTAMP_KEY in line
            lines.append((start, line if usable else None))
    return lines


def _point(line: Record) -> MetricPoint:
    metrics = {k: v for k, v in line.items() if k not in ("step", TIMESTAMP_KEY)}
    return metrics, line["step"], int(line[TIMESTAMP_KEY])


def rejected_path(spool_path: Path) -> Path:
    """Where records the server refused for good are kept (next to the spool)."""
    return spool_path.with_name(spool_path.stem + REJECTED_SUFFIX + spool_path.suffix)


def _send_record(target: ReplayTarget, record: Record) -> None:
    kind = record["kind"]
    if kind == "tags":
        target.set_tags(record["tags"])
    elif kind == "text":
        target.log_text(record["text"], record["artifact_file"])
    elif kind == "artifact":
        target.log_artifact(Path(record["path"]), record.get("artifact_path"))
    else:
        target.close(record["status"])


def _line(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":")) + "\n"


@dataclass
class Spool:
    """What the server has not received yet (see the module docstring); save() writes it, load() reads it back."""

    path: Path
    run_id: str | None = None
    start: RunSpec | None = None
    # The id of a run created after open_tracker returned stays on disk until close, so a crash cannot lose it.
    pinned: bool = False
    # Bytes of metrics.jsonl the server has; None: no metrics owed.
    metrics_sent: int | None = None
    # Where the owed metrics end, for leftovers set aside while another run goes on writing the file.
    metrics_end: int | None = None
    records: list[Record] = field(default_factory=list)

    @property
    def metrics_path(self) -> Path:
        """The metrics.jsonl whose lines the spool's offsets count."""
        return self.path.with_name(METRICS_FILE)

    @property
    def owed(self) -> bool:
        """Whether a loaded spool holds anything for the server (records, metrics or the run itself)."""
        return bool(self.records) or self.start is not None or self.metrics_sent is not None

    @classmethod
    def load(cls, path: Path) -> Spool:
        """The spool at `path` (empty when there is none); unreadable lines and unknown records are skipped."""
        spool = cls(Path(path))
        try:
            text = spool.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return spool
        items = []
        for raw in text.splitlines():
            try:
                items.append(json.loads(raw))
            except ValueError:
                log.warning("skipped an unreadable line in tracking spool %s", spool.path)
        header = items[0] if items and isinstance(items[0], dict) and "bitcpm_spool" in items[0] else {}
        spool.run_id, spool.pinned = header.get("run_id"), bool(header.get("pinned"))
        spool.start = RunSpec.from_json(header["start"]) if header.get("start") else None
        spool.metrics_sent, spool.metrics_end = header.get("metrics_sent"), header.get("metrics_end")
        spool.records = [r for r in items if isinstance(r, dict) and r.get("kind") in RECORD_KINDS]
        return spool

    def save(self, backlog: bool = True) -> None:
        """Replace the file with the run's header and (with `backlog`) what is owed; remove it if that says nothing."""
        start = asdict(self.start) if self.start is not None else None
        header: Record = {"bitcpm_spool": SPOOL_FORMAT, "run_id": self.run_id, "start": start, "pinned": self.pinned}
        records = list(self.records) if backlog else []
        if backlog and self.metrics_sent is not None:
            header["metrics_sent"] = self.metrics_sent
            if self.metrics_end is not None:
                header["metrics_end"] = self.metrics_end
        if not (records or start or (self.pinned and self.run_id) or "metrics_sent" in header):
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            out.writelines(_line(item) for item in [header, *records])
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)  # a crash leaves the old file or the new one, never half of one

    def send(
        self,
        target: ReplayTarget,
        end: int,
        records: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> int:
        """Send the metrics owed up to byte `end` of metrics.jsonl, then the first `records` records (all if None).

        Returns how many went. A record may only follow the metrics logged before it, so a caller whose run is
        still logging counts its records before it reads `end`. Progress is noted here as it goes (saving it is the
        caller's business); a transient error is raised. What the server refuses for good goes to the .rejected
        file beside the spool, so it cannot hold back the rest.
        """
        count = 0
        while self.metrics_sent is not None and self.metrics_sent < end and not should_stop():
            lines = read_metric_lines(self.metrics_path, self.metrics_sent, end, CHUNK_LINES)
            good = [(offset, line) for offset, line in lines if line is not None]
            try:
                if good:
                    target.log_metric_points([_point(line) for _, line in good])
            except Exception as exc:
                if not is_permanent(exc):
                    raise
                for offset, line in good:  # find the culprit: one line at a time
                    self._try(lambda line=line: target.log_metric_points([_point(line)]), {"kind": "metrics", **line})
                    self.metrics_sent = offset
            # An empty read: the file is shorter than it was (removed by hand); nothing more can be sent.
            self.metrics_sent = lines[-1][0] if lines else end
            count += len(good)
        for _ in range(len(self.records) if records is None else records):
            if should_stop():
                break
            self._try(lambda: _send_record(target, self.records[0]), self.records[0])
            self.records.pop(0)
            count += 1
        return count

    def _try(self, send: Callable[[], None], record: Record) -> None:
        """Send one record; keep it aside if the server refuses it for good, raise if it is unreachable."""
        try:
            send()
        except Exception as exc:
            if not is_permanent(exc):
                raise
            path = rejected_path(self.path)
            with path.open("a", encoding="utf-8") as out:
                out.write(_line({**record, "error": describe(exc)}))
            say(f"bitcpm: warning: MLflow refused a {record['kind']} record ({describe(exc)}); kept in {path}")


def replay_spool_file(opener: RunOpener, spool_path: Path, run_id: str | None = None) -> int:
    """Send what a spool file owes to its run (or `run_id`) now; returns how many records and metric lines went.

    A spool whose run was never created gets it created from the spooled start request. Raises the transport error
    when the server is unreachable; the file then keeps what was not sent.
    """
    spool = Spool.load(spool_path)
    if not spool.owed:
        spool.pinned = False
        spool.save()
        return 0
    target_id = run_id or spool.run_id
    if target_id is not None:
        target = opener.attach_run(target_id)
    elif spool.start is not None:
        # retry=True: an earlier attempt may have created the run before its reply was lost.
        target = opener.open_run(spool.start, retry=True)
    else:
        raise ValueError(f"{spool_path} names no run; pass the run id to replay into")
    spool.run_id, spool.start, spool.pinned = target.run_id, None, False
    end = spool.metrics_end
    if end is None:
        end = spool.metrics_path.stat().st_size if spool.metrics_path.exists() else 0
    try:
        count = spool.send(target, end)
    except BaseException:
        spool.save()
        raise
    spool.save(backlog=False)
    return count
