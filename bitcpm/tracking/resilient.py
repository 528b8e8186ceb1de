"""A tracker that keeps training going through tracking-server outages: spool locally, replay later.

Log calls only stamp the record and put it on a bounded queue; one background thread talks to the
server. Why a thread rather than trying synchronously and spooling on failure: a fast-failing client
returns in milliseconds only when the server's port is closed; a server that hangs, or a host whose
packets are dropped, costs a full HTTP timeout per call, and even a healthy but busy server adds its
latency to the training step. The thread keeps every log call in the microseconds in all of these.

Ordering and exactly-once delivery: records carry a sequence number and, for metrics, the step and
the timestamp they were logged at. Records reach the server in sequence order; the spool is cut only
after a record was accepted. A request whose reply was lost may be sent twice; MLflow's SQL stores
drop a metric identical in key, value, step and timestamp, tags and text artifacts overwrite, and run
creation looks up the run an earlier attempt made, so a replay never duplicates anything.

What a hard kill (SIGKILL, out of memory) can still lose: records in the in-memory queue, normally
none, as the thread empties it within milliseconds (into the spool while offline).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bitcpm.tracking.base import Tracker
from bitcpm.tracking.replay import (
    ReplayTarget,
    RunOpener,
    apply_records,
    describe,
    is_permanent,
    keep_rejected,
    print_stderr,
    replay_records,
    replay_spool_file,
)
from bitcpm.tracking.spool import Record, RunSpec, Spool

log = logging.getLogger(__name__)

RETRY_INTERVAL_S = 5.0
# How long open_tracker waits for the first contact before training goes on offline.
START_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 30.0
# At close, while the server still fails: this many tries this far apart (within CLOSE_TIMEOUT_S).
CLOSE_ATTEMPTS = 3
CLOSE_RETRY_PAUSE_S = 1.0
MAX_QUEUED = 10_000
MAX_SPOOL_BURST = 1000
_WAKE = object()


class StartError(RuntimeError):
    """Internal: the server answered at start but refused the run; its refusal is the __cause__."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class ResilientTracker(Tracker):
    """Tracker whose log calls never block on the server; see the module docstring."""

    def __init__(
        self,
        opener: RunOpener,
        spec: RunSpec,
        spool_path: Path,
        *,
        retry_interval_s: float | None = None,
        start_timeout_s: float | None = None,
        close_timeout_s: float | None = None,
        max_queued: int = MAX_QUEUED,
        say: Callable[[str], None] = print_stderr,
    ) -> None:
        """Open the run (waiting at most start_timeout_s for the server) and start the sender thread.

        Timings left at None take the module's RETRY_INTERVAL_S, START_TIMEOUT_S and CLOSE_TIMEOUT_S
        as they are at this call (tests shorten them).

        Leftovers of an earlier session in `spool_path` are replayed first: into the run they name
        when that is the run being resumed (or nothing is being resumed), else set aside and replayed
        into their own run. Raises the server's refusal (e.g. ValueError for an unknown resume id) when
        it answers at start but will not open the run the caller asked for.
        """
        super().__init__()
        self._opener = opener
        self._say = say
        self._retry_interval_s = RETRY_INTERVAL_S if retry_interval_s is None else retry_interval_s
        self._close_timeout_s = CLOSE_TIMEOUT_S if close_timeout_s is None else close_timeout_s
        self._spool = Spool.load(spool_path)
        self._foreign = self._set_aside_foreign(spec.resume_run_id)
        # The run this session continues: the caller's, else the one the leftovers belong to.
        leftover_resume = self._spool.start.resume_run_id if self._spool.start else None
        target_id = spec.resume_run_id or self._spool.run_id or leftover_resume
        self._adopted = target_id is not None and target_id != spec.resume_run_id
        self._spec = replace(spec, resume_run_id=target_id)
        # A leftover end-of-run would end the run this session is about to continue.
        self._spool.discard(r["seq"] for r in self._spool.records if r["kind"] == "finish")
        self._seq = itertools.count(self._spool.next_seq())
        self._queue: queue.Queue[Any] = queue.Queue(max_queued)
        self._target: ReplayTarget | None = None
        self._open_attempts = 0
        self._online = False
        self._warned = False
        self._recovered_said = False
        self._sender_failed = False
        self._next_try = 0.0
        self._inflight: Record | None = None
        self._start_error: BaseException | None = None
        # Guards the hand-over at start: a refusal is raised by __init__ only if it has not returned yet.
        self._handoff = threading.Lock()
        self._returned = False
        self._started = threading.Event()
        self._stop = threading.Event()
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._work, name="bitcpm-tracking-sender", daemon=True)
        self._thread.start()
        self._started.wait(START_TIMEOUT_S if start_timeout_s is None else start_timeout_s)
        with self._handoff:
            self._returned = True
            error = self._start_error
        if error is not None:
            self._thread.join()
            raise error

    # --- public API ----------------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        """The run's id; None until the server has been reached (the spool pins it once known)."""
        target = self._target
        return target.run_id if target is not None else None

    @property
    def spool_path(self) -> Path:
        """Where records wait while the server is unreachable."""
        return self._spool.path

    @property
    def online(self) -> bool:
        """Whether the last exchange with the server succeeded and nothing waits in the spool."""
        return self._online and not self._spool.pending

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue metrics stamped with `step` and the current time; None values are left out."""
        self._ensure_open()
        values = {str(k): float(v) for k, v in metrics.items() if v is not None}
        self._enqueue({"kind": "metrics", "step": int(step), "ts": _now_ms(), "metrics": values})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Queue tags."""
        self._ensure_open()
        self._enqueue({"kind": "tags", "tags": {str(k): str(v) for k, v in tags.items()}})

    def log_text(self, text: str, artifact_file: str) -> None:
        """Queue a text artifact (its content is spooled, so later edits of a source do not matter)."""
        self._ensure_open()
        self._enqueue({"kind": "text", "text": str(text), "artifact_file": str(artifact_file)})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Queue an upload of a file or directory; the spool keeps its path, not a copy of it."""
        self._ensure_open()
        path = Path(path).resolve()
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        self._enqueue({"kind": "artifact", "path": str(path), "artifact_path": artifact_path})

    def _ensure_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"tracking run {self.run_id} is already closed")

    def _finish(self, status: str) -> None:
        """Flush within close_timeout_s, try a last replay, and say where the spool is if it remains."""
        self._enqueue({"kind": "finish", "status": status})
        self._stop.set()
        self._wake()
        self._thread.join(self._close_timeout_s)
        if self._thread.is_alive():
            # The sender is stuck in a request; whatever it has not handed over goes to the spool.
            self._abandoned.set()
        self._drain_to_spool()
        left = self._spool.records
        if self._spool.pending:
            run = self.run_id or "(not created yet)"
            self._say(
                f"bitcpm: warning: MLflow at {self._opener.uri} still unreachable at close; "
                f"{len(left)} record(s) kept in {self._spool.path}; the next start with this spool "
                f"replays them into run {run}"
            )
        elif self._spool.pinned:
            self._spool.set_header(run_id=self._spool.run_id, start=None, pinned=False)

    # --- queue -------------------------------------------------------------------------------------

    def _enqueue(self, record: Record) -> None:
        record["seq"] = next(self._seq)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            # The sender is stuck in a slow request: keep the caller non-blocking and lose nothing.
            log.warning("tracking queue full; spooling to %s directly", self._spool.path)
            try:
                self._drain_to_spool(record)
            except OSError as exc:  # tracking must never stop training; metrics.jsonl still has them
                self._say(f"bitcpm: warning: cannot write tracking spool {self._spool.path} ({exc}); records lost")

    def _wake(self) -> None:
        # A full queue wakes the sender anyway.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE)

    def _drain_to_spool(self, *extra: Record) -> None:
        records = self._take_queued(limit=None)
        inflight = self._inflight
        if inflight is not None and self._abandoned.is_set():
            # Its send may still succeed; a second copy is dropped by the server as a duplicate.
            records.append(inflight)
        self._spool.append([*records, *extra])

    # --- sender thread -------------------------------------------------------------------------------

    def _pending(self) -> bool:
        return self._target is None or bool(self._spool.records) or self._foreign is not None

    def _wait_s(self) -> float | None:
        if not self._pending():
            return None
        if self._online:
            return 0.0
        return max(self._next_try - time.monotonic(), 0.0)

    def _work(self) -> None:
        try:
            self._first_contact()
        except Exception as exc:
            self._sender_error(exc)
        finally:
            self._started.set()
        while not self._abandoned.is_set():
            try:
                if self._step():
                    return
            except Exception as exc:
                self._sender_error(exc)

    def _step(self) -> bool:
        """Handle one queued record and retry if due; True once close() has been served."""
        try:
            item = self._queue.get(timeout=self._wait_s())
        except queue.Empty:
            item = None
        if item is not None and item is not _WAKE:
            self._handle(item)
        if self._stop.is_set() and self._queue.empty():
            self._last_attempts()
            return True
        if self._wait_s() == 0.0:
            self._attempt()
        return False

    def _sender_error(self, exc: BaseException) -> None:
        """Keep the sender alive through local failures (e.g. a full disk under the spool)."""
        if not self._sender_failed:
            self._sender_failed = True
            self._say(f"bitcpm: warning: tracking sender error ({describe(exc)}); records may be lost; continuing")
        log.warning("tracking sender error", exc_info=exc)
        self._online = False
        self._next_try = time.monotonic() + self._retry_interval_s
        time.sleep(min(self._retry_interval_s, CLOSE_RETRY_PAUSE_S))

    def _last_attempts(self) -> None:
        """The last tries close() promises: a few quick ones, so a flaky server does not leave a spool."""
        pause = min(self._retry_interval_s, CLOSE_RETRY_PAUSE_S)
        for attempt in range(CLOSE_ATTEMPTS):
            if not self._pending() or self._abandoned.is_set():
                return
            if attempt:
                time.sleep(pause)
            self._attempt()

    def _first_contact(self) -> None:
        """Open the run before __init__ returns if the server answers in time; leftovers are replayed later."""
        try:
            self._open(initial=True)
            self._online = True
        except StartError as exc:
            with self._handoff:
                if not self._returned:
                    # The caller gets the server's own refusal (e.g. ValueError: cannot resume run ...).
                    self._start_error = exc.__cause__ or exc
                    self._started.set()
                    self._abandoned.set()  # ends the loop: this tracker is never handed out
                    return
            self._go_offline(exc)
        except Exception as exc:
            self._go_offline(exc)

    def _handle(self, record: Record) -> None:
        """Send a live record, or spool it when the server is down or older records still wait."""
        if self._target is not None and self._online and not self._spool.records:
            self._inflight = record
            try:
                apply_records(self._target, [record])
                return
            except Exception as exc:
                if is_permanent(exc):
                    self._reject(record, exc)
                    return
                self._go_offline(exc)
            finally:
                self._inflight = None
        # Whatever else is queued goes along: one fsync for a burst instead of one per record.
        self._spool.append([record, *self._take_queued()])

    def _take_queued(self, limit: int | None = MAX_SPOOL_BURST) -> list[Record]:
        """Records waiting in the queue (wake-ups dropped), at most `limit` (None: all of them)."""
        records: list[Record] = []
        while limit is None or len(records) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _WAKE:
                records.append(item)
        return records

    def _attempt(self) -> None:
        """Open the run if needed, then replay set-aside and spooled records; go offline on failure."""
        try:
            if self._target is None:
                self._open(initial=False)
            if self._foreign is not None:
                self._replay_foreign()
            self._replay()
        except Exception as exc:
            self._go_offline(exc)
            return
        if self._warned and not self._recovered_said:
            self._recovered_said = True
            self._say(f"bitcpm: MLflow at {self._opener.uri} reachable again; spooled records replayed")
        self._online = True

    def _open(self, initial: bool) -> None:
        retry = self._open_attempts > 0
        self._open_attempts += 1
        try:
            target = self._opener.open_run(self._spec, retry=retry)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            if self._spec.resume_run_id and self._adopted:
                # The spool named a run the server no longer has; its records go into a new run.
                self._say(
                    f"bitcpm: warning: cannot resume MLflow run {self._spec.resume_run_id} named in "
                    f"{self._spool.path} ({describe(exc)}); starting a new run"
                )
                self._spec = replace(self._spec, resume_run_id=None)
                self._adopted = False
                target = self._opener.open_run(self._spec, retry=retry)
            elif initial:
                raise StartError(str(exc)) from exc
            else:
                raise
        self._target = target
        # A run created after open_tracker returned is unknown to the caller's checkpoint: pin its id.
        with self._handoff:
            pinned = self._returned or self._spool.pinned
        self._spool.set_header(run_id=target.run_id, start=None, pinned=pinned)

    def _replay(self) -> None:
        records = self._spool.records
        if not records:
            return
        assert self._target is not None
        started = time.monotonic()
        handled, error = replay_records(self._target, records, self._reject, self._abandoned.is_set)
        self._spool.discard(handled)
        if handled:
            log.info("replayed %d spooled record(s) in %.2f s", len(handled), time.monotonic() - started)
        if error is not None:
            raise error

    def _replay_foreign(self) -> None:
        assert self._foreign is not None
        count = replay_spool_file(self._opener, self._foreign, say=self._say)
        log.info("replayed %d record(s) from %s into their own run", count, self._foreign)
        self._foreign = None

    def _set_aside_foreign(self, resume_run_id: str | None) -> Path | None:
        """Move leftovers of a run other than the one being resumed to their own file."""
        start = self._spool.start
        other = self._spool.run_id or (start.resume_run_id if start is not None else None)
        if not (other and resume_run_id and other != resume_run_id and self._spool.pending):
            return None
        path = self._spool.path
        aside = path.with_name(f"{path.stem}.{other}{path.suffix}")
        self._spool.set_aside(aside)
        self._say(f"bitcpm: warning: {path} held records of MLflow run {other}; moved to {aside} to replay there")
        return aside

    def _go_offline(self, exc: BaseException) -> None:
        self._online = False
        self._next_try = time.monotonic() + self._retry_interval_s
        if self._target is None and self._spool.start is not self._spec:
            # No run yet: the spool must say how to create it, for this session or the next.
            self._spool.set_header(run_id=None, start=self._spec, pinned=False)
        if not self._warned:
            self._warned = True
            self._say(
                f"bitcpm: warning: MLflow at {self._opener.uri} unreachable ({describe(exc)}); "
                f"spooling metrics to {self._spool.path} and retrying"
            )
        log.debug("tracking server unreachable", exc_info=exc)

    def _reject(self, record: Record, exc: BaseException) -> None:
        keep_rejected(self._spool.path, record, exc, self._say)
