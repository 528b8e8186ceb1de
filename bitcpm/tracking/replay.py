"""Sending spooled tracking records to a run: grouping, error triage, and replay of a whole spool file."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from bitcpm.tracking.spool import MetricPoint, Record, RunSpec, Spool, append_lines, rejected_path

# About one MLflow log_batch request's worth of metric values per replayed group.
REPLAY_GROUP_VALUES = 1000
# 4xx answers that can pass (expired credentials, rate limits, proxy timeouts) are retried like outages.
_RETRYABLE_HTTP = frozenset({401, 403, 408, 429})


class ReplayTarget(Protocol):
    """One open run that spooled records can be sent to (MlflowTracker is one)."""

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


def _groups(records: Sequence[Record]) -> Iterator[list[Record]]:
    """Consecutive metrics records merged up to about one request; every other record alone."""
    group: list[Record] = []
    values = 0
    for record in records:
        if record["kind"] == "metrics":
            size = max(len(record["metrics"]), 1)
            if group and values + size > REPLAY_GROUP_VALUES:
                yield group
                group, values = [], 0
            group.append(record)
            values += size
            continue
        if group:
            yield group
            group, values = [], 0
        yield [record]
    if group:
        yield group


def apply_records(target: ReplayTarget, records: Sequence[Record]) -> None:
    """Send one group from _groups to the run."""
    first = records[0]
    kind = first["kind"]
    if kind == "metrics":
        target.log_metric_points([(r["metrics"], r["step"], r["ts"]) for r in records])
    elif kind == "tags":
        target.set_tags(first["tags"])
    elif kind == "text":
        target.log_text(first["text"], first["artifact_file"])
    elif kind == "artifact":
        target.log_artifact(Path(first["path"]), first.get("artifact_path"))
    elif kind == "finish":
        target.close(first["status"])
    else:  # pragma: no cover - Spool.load filters unknown kinds
        raise ValueError(f"unknown spool record kind {kind!r}")


def replay_records(
    target: ReplayTarget,
    records: Sequence[Record],
    on_rejected: Callable[[Record, BaseException], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[list[int], BaseException | None]:
    """Send records in order until one fails transiently: (seqs handled, the transient error or None).

    A record the server refuses for good goes to `on_rejected` and counts as handled, so one bad
    record cannot hold back everything after it.
    """
    handled: list[int] = []
    for group in _groups(records):
        if should_stop():
            break
        try:
            apply_records(target, group)
        except Exception as exc:
            if not is_permanent(exc):
                return handled, exc
            # Find the culprit: resend the group's records one by one.
            for record in group:
                try:
                    apply_records(target, [record])
                except Exception as single:
                    if not is_permanent(single):
                        return handled, single
                    on_rejected(record, single)
                handled.append(record["seq"])
            continue
        handled.extend(r["seq"] for r in group)
    return handled, None


def print_stderr(message: str) -> None:
    """Default output for tracking warnings: a line on stderr, flushed (they come from a thread)."""
    print(message, file=sys.stderr, flush=True)


def keep_rejected(spool_path: Path, record: Record, exc: BaseException, say: Callable[[str], None]) -> None:
    """Keep a record the server refused for good next to the spool, and say so."""
    path = rejected_path(spool_path)
    append_lines(path, [{**record, "error": describe(exc)}])
    say(f"bitcpm: warning: MLflow refused a {record['kind']} record ({describe(exc)}); kept in {path}")


def replay_spool_file(
    opener: RunOpener,
    spool_path: Path,
    run_id: str | None = None,
    say: Callable[[str], None] = print_stderr,
) -> int:
    """Send a spool file's records to its run (or `run_id`) now; returns how many were handled.

    A spool whose run was never created gets it created from the spooled start request. Raises the
    transport error when the server is unreachable; the file then keeps what was not sent.
    """
    spool = Spool.load(spool_path)
    if not spool.pending:
        if spool.path.exists():
            spool.set_header(run_id=None, start=None, pinned=False)
        return 0
    target_id = run_id or spool.run_id
    if target_id is not None:
        target = opener.attach_run(target_id)
    elif spool.start is not None:
        # retry=True: an earlier attempt may have created the run before its reply was lost.
        target = opener.open_run(spool.start, retry=True)
    else:
        raise ValueError(f"{spool_path} names no run; pass the run id to replay into")
    spool.set_header(run_id=target.run_id, start=None, pinned=False)
    handled, error = replay_records(
        target, spool.records, lambda record, exc: keep_rejected(spool.path, record, exc, say)
    )
    spool.discard(handled)
    if error is not None:
        raise error
    return len(handled)
