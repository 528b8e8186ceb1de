"""Tracker interface shared by every tracking backend, plus the do-nothing NullTracker."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


def status_for_exit(exc_type: type[BaseException] | None, exc: BaseException | None) -> str:
    """Map how a `with` block ended to the final run status."""
    if exc_type is None:
        return "FINISHED"
    if issubclass(exc_type, KeyboardInterrupt):
        return "KILLED"
    # sys.exit(0) from a clean early stop is not a failure.
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "FINISHED"
    return "FAILED"


class Tracker(abc.ABC):
    """One experiment-tracking run: metrics, params, tags and artifacts."""

    run_id: str | None = None
    # The metrics.jsonl this tracker itself appends every logged metric to (a resilient MLflow run's), if any.
    metrics_path: Path | None = None

    def __init__(self) -> None:
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether close() has completed."""
        return self._closed

    @abc.abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar metrics at a training step."""

    @abc.abstractmethod
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a local file or directory, optionally under a sub-folder of the run's artifacts."""

    @abc.abstractmethod
    def log_text(self, text: str, artifact_file: str) -> None:
        """Store a string as an artifact file (e.g. 'config/resolved.yaml')."""

    @abc.abstractmethod
    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add or overwrite run tags (tags are mutable, unlike params)."""

    @abc.abstractmethod
    def _finish(self, status: str) -> None:
        """Backend-specific end of run; called at most once by close()."""

    def close(self, status: str = "FINISHED") -> None:
        """End the run with FINISHED, FAILED or KILLED; later calls are no-ops."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        if self._closed:
            return
        self._finish(status)
        self._closed = True

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(status_for_exit(exc_type, exc))


class NullTracker(Tracker):
    """Tracker for `backend: none`: accepts every call and records nothing."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Discard metrics."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Discard the artifact."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Discard the text."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Discard the tags."""

    def _finish(self, status: str) -> None:
        """Nothing to finish."""
