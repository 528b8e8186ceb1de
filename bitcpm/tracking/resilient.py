"""A tracker that keeps training going through tracking-server outages and loses nothing.

log_metrics appends the metrics, with their step and the time, to RUN_DIR/metrics.jsonl (the run's local copy of
every metric) and returns; tags, texts, artifacts and the end of the run wait in memory. One background thread
sends the file's new lines and those records to the server. While the server cannot be reached the metrics simply
stay in metrics.jsonl: the spool beside it (bitcpm.tracking.spool) notes from which byte on they are owed, and keeps
the other records and, before the run exists, how to create it. The thread retries every few seconds and a few
times at close; whatever is still owed then is sent by the next start with the same spool, or by replay_spool.

Why a thread rather than trying synchronously and spooling on failure: a fast-failing client returns in
milliseconds only when the server's port is closed; a server that hangs, or a host whose packets are dropped, costs
a full HTTP timeout per call, and even a healthy but busy server adds its latency to the training step. The thread
keeps every log call in the microseconds in all of these.

Ordering and exactly-once delivery: metrics go in file order with the timestamps they were logged at, the other
records in the order they were logged, each after the metrics logged before it (so the end of the run comes last).
What was sent is noted only once the server accepted it, so a request whose reply was lost may be sent again;
MLflow's SQL stores drop a metric identical in key, value, step and timestamp, tags and text artifacts overwrite,
and run creation looks up the run an earlier attempt made, so a replay never duplicates anything.

What a hard kill (SIGKILL, out of memory) can still lose: what the thread had not sent or spooled yet, normally
nothing, as it does either within milliseconds. Metrics are in metrics.jsonl from the moment log_metrics returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from bitcpm.tracking.base import Tracker
from bitcpm.tracking.spool import (
    Record,
    ReplayTarget,
    RunOpener,
    RunSpec,
    Spool,
    append_metrics,
    describe,
    is_permanent,
    read_metric_lines,
    replay_spool_file,
    say,
)

log = logging.getLogger(__name__)

# Read at each use, so tests can shorten them.
RETRY_INTERVAL_S = 5.0
# How long open_tracker waits for the first contact before training goes on offline.
START_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 30.0
# At close, while the server still fails: this many tries, at most this far apart (within CLOSE_TIMEOUT_S).
CLOSE_ATTEMPTS = 3
CLOSE_RETRY_PAUSE_S = 1.0


class ResilientTracker(Tracker):
    """Tracker whose log calls never wait for the server; see the module docstring."""

    def __init__(self, opener: RunOpener, spec: RunSpec, spool_path: Path) -> None:
        """Open the run (waiting at most START_TIMEOUT_S for the server) and start the sender thread.

        Leftovers of an earlier session in `spool_path` are sent first: into the run they name when that is the run
        being resumed (or nothing is being resumed), else set aside and replayed into their own run. Raises the
        server's refusal (e.g. ValueError for an unknown resume id) when it answers at start but will not open the
        run the caller asked for.
        """
        super().__init__()
        self._opener = opener
        self._spool = Spool.load(spool_path)
        self.metrics_path = self._spool.metrics_path
        self._end = self.metrics_path.stat().st_size if self.metrics_path.exists() else 0
        self._foreign = self._set_aside_foreign(spec.resume_run_id)
        leftover = self._spool
        # The run this session continues: the caller's, else the one the leftovers belong to.
        target_id = spec.resume_run_id or leftover.run_id or (leftover.start.resume_run_id if leftover.start else None)
        self._adopted = target_id is not None and target_id != spec.resume_run_id
        self._spec = replace(spec, resume_run_id=target_id)
        # A leftover end of run would end the run this session is about to continue.
        leftover.records = [r for r in leftover.records if r["kind"] != "finish"]
        # Nothing owed: this session's lines start at the end. Owed beyond the end: the file shrank (edited by hand).
        leftover.metrics_sent = min(self._end if leftover.metrics_sent is None else leftover.metrics_sent, self._end)
        self._spooled = leftover.path.exists()  # the file holds a backlog, to clear once it is sent
        self._target: ReplayTarget | None = None
        self._open_attempts = 0
        self._online = self._warned = self._recovered_said = self._sender_failed = self._unsaved = False
        self._next_try = 0.0
        self._start_error: BaseException | None = None
        self._returned = False
        # Orders the sender's spool writes against close() taking over, and the refusal hand-over at start.
        self._lock = threading.Lock()
        self._started, self._stop, self._abandoned, self._wake = (threading.Event() for _ in range(4))
        self._thread = threading.Thread(target=self._work, name="bitcpm-tracking-sender", daemon=True)
        self._thread.start()
        self._started.wait(START_TIMEOUT_S)
        with self._lock:
            self._returned = True
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    # --- public API ----------------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        """The run's id; None until the server has been reached (the spool pins it once known)."""
        target = self._target
        return target.run_id if target is not None else None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Append metrics at `step`, stamped now, to metrics.jsonl (None values left out); the sender sends them."""
        self._ensure_open()
        self._end = append_metrics(self.metrics_path, metrics, step)
        self._wake.set()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Queue tags."""
        self._add({"kind": "tags", "tags": {str(k): str(v) for k, v in tags.items()}})

    def log_text(self, text: str, artifact_file: str) -> None:
        """Queue a text artifact (its content is kept, so later edits of a source do not matter)."""
        self._add({"kind": "text", "text": str(text), "artifact_file": str(artifact_file)})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Queue an upload of a file or directory; the spool keeps its path, not a copy of it."""
        path = Path(path).resolve()
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        self._add({"kind": "artifact", "path": str(path), "artifact_path": artifact_path})

    def _ensure_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"tracking run {self.run_id} is already closed")

    def _add(self, record: Record) -> None:
        self._ensure_open()
        self._spool.records.append(record)
        self._unsaved = True
        self._wake.set()

    def _finish(self, status: str) -> None:
        """Flush within CLOSE_TIMEOUT_S, trying a few times, and say where the spool is if something is still owed."""
        self._add({"kind": "finish", "status": status})
        self._stop.set()
        self._wake.set()
        self._thread.join(CLOSE_TIMEOUT_S)
        with self._lock:
            # From here on a sender still stuck in a request leaves the spool alone; its send may still land,
            # and sending it again next time is harmless (see the module docstring).
            self._abandoned.set()
            owed = self._owed()
            if self._target is None:  # still creating it (a hung server): say how, as going offline would
                self._spool.start = self._spec
            self._spool.pinned = self._spool.pinned and owed
            self._spool.save(backlog=owed)
        if owed:
            sent = self._spool.metrics_sent or 0
            left = len(self._spool.records) + len(read_metric_lines(self.metrics_path, sent, self._end))
            say(
                f"bitcpm: warning: MLflow at {self._opener.uri} still unreachable at close; "
                f"{left} record(s) kept in {self._spool.path}; the next start with this spool "
                f"replays them into run {self.run_id or '(not created yet)'}"
            )

    # --- sender thread -------------------------------------------------------------------------------

    def _owed(self) -> bool:
        """Whether the server lacks anything of this session (the run itself, records or metrics)."""
        return self._target is None or bool(self._spool.records) or (self._spool.metrics_sent or 0) < self._end

    def _work(self) -> None:
        self._first_contact()
        while not self._abandoned.is_set():
            try:
                if self._serve():
                    return
            except Exception as exc:
                self._sender_error(exc)

    def _serve(self) -> bool:
        """One round: send, or while offline and no retry is due keep the spool current; True once close is served."""
        self._wake.clear()  # before reading what to send: a log call from now on wakes the next round
        stopping = self._stop.is_set()
        if stopping or self._online or time.monotonic() >= self._next_try:
            self._attempt()
        elif self._unsaved:
            self._persist()
        if stopping:
            for _ in range(CLOSE_ATTEMPTS - 1):  # a flaky server should not leave a spool behind
                if self._abandoned.is_set() or not (self._owed() or self._foreign):
                    break
                time.sleep(min(RETRY_INTERVAL_S, CLOSE_RETRY_PAUSE_S))
                self._attempt()
            return True
        self._wake.wait(None if self._online else max(self._next_try - time.monotonic(), 0.0))
        return False

    def _sender_error(self, exc: BaseException) -> None:
        """Keep the sender alive through local failures (e.g. a full disk under the spool)."""
        if not self._sender_failed:
            self._sender_failed = True
            say(f"bitcpm: warning: tracking sender error ({describe(exc)}); records may be lost; continuing")
        log.warning("tracking sender error", exc_info=exc)
        self._online = False
        self._next_try = time.monotonic() + RETRY_INTERVAL_S
        time.sleep(min(RETRY_INTERVAL_S, CLOSE_RETRY_PAUSE_S))

    def _first_contact(self) -> None:
        """Open the run before __init__ returns if the server answers in time; leftovers are sent afterwards."""
        try:
            self._open()
            self._online = True
        except Exception as exc:
            with self._lock:
                # The caller gets the server's own refusal (e.g. ValueError: cannot resume run ...).
                refused = is_permanent(exc) and not self._returned
                if refused:
                    self._start_error = exc
                    self._abandoned.set()  # ends the loop: this tracker is never handed out
            if not refused:
                self._go_offline(exc)
        finally:
            self._started.set()

    def _attempt(self) -> None:
        """Open the run if needed, then send set-aside leftovers and everything owed; go offline on failure."""
        try:
            if self._target is None:
                self._open()
            if self._foreign is not None:
                count = replay_spool_file(self._opener, self._foreign)
                log.info("replayed %d record(s) from %s into their own run", count, self._foreign)
                self._foreign = None
            assert self._target is not None
            # Records first: each may go only after the metrics logged before it (the end of the run last of all).
            records = len(self._spool.records)
            self._spool.send(self._target, self._end, records, self._abandoned.is_set)
        except Exception as exc:
            self._go_offline(exc)
            return
        if self._warned and not self._recovered_said:
            self._recovered_said = True
            say(f"bitcpm: MLflow at {self._opener.uri} reachable again; spooled records replayed")
        self._online = True
        if self._spooled:
            self._persist(backlog=False)

    def _open(self) -> None:
        retry = self._open_attempts > 0  # an earlier attempt may have created the run before its reply was lost
        self._open_attempts += 1
        try:
            target = self._opener.open_run(self._spec, retry=retry)
        except Exception as exc:
            if not (self._adopted and is_permanent(exc)):
                raise
            # The spool named a run the server no longer has; its records go into a new run.
            say(
                f"bitcpm: warning: cannot resume MLflow run {self._spec.resume_run_id} named in "
                f"{self._spool.path} ({describe(exc)}); starting a new run"
            )
            self._spec = replace(self._spec, resume_run_id=None)
            self._adopted = False
            target = self._opener.open_run(self._spec, retry=retry)
        with self._lock:
            # A run created after open_tracker returned is unknown to the caller's checkpoint: pin its id.
            self._spool.pinned = self._returned or self._spool.pinned
        self._target = target
        self._spool.run_id, self._spool.start = target.run_id, None
        if self._spool.pinned or self._spooled:
            self._persist()

    def _persist(self, backlog: bool = True) -> None:
        """Write the spool from the sender, unless close() has taken over."""
        with self._lock:
            if self._abandoned.is_set():
                return
            self._unsaved = False
            self._spool.save(backlog)
            self._spooled = backlog

    def _set_aside_foreign(self, resume_run_id: str | None) -> Path | None:
        """Move leftovers of a run other than the one being resumed to their own file, to be replayed there."""
        spool = self._spool
        other = spool.run_id or (spool.start.resume_run_id if spool.start is not None else None)
        if not (other and resume_run_id and other != resume_run_id and spool.owed):
            return None
        aside = spool.path.with_name(f"{spool.path.stem}.{other}{spool.path.suffix}")
        # Their metrics end where this session's begin.
        replace(spool, path=aside, metrics_end=self._end).save()
        spool.path.unlink()
        self._spool = Spool(spool.path)
        say(f"bitcpm: warning: {spool.path} held records of MLflow run {other}; moved to {aside} to replay there")
        return aside

    def _go_offline(self, exc: BaseException) -> None:
        self._online = False
        self._next_try = time.monotonic() + RETRY_INTERVAL_S
        if self._target is None:
            # No run yet: the spool must say how to create it, for this session or the next.
            self._spool.start = self._spec
        self._persist()
        if not self._warned:
            self._warned = True
            say(
                f"bitcpm: warning: MLflow at {self._opener.uri} unreachable ({describe(exc)}); "
                f"spooling metrics to {self._spool.path} and retrying"
            )
        log.debug("tracking server unreachable", exc_info=exc)
