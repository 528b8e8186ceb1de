"""Tests for the tracking entry point, the Tracker base class and the backend-neutral helpers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bitcpm.tracking import NullTracker, Tracker, open_tracker
from bitcpm.tracking.keys import KeyMapper, safe_key
from bitcpm.tracking.limits import batches, truncate
from bitcpm.tracking.store_uri import default_artifact_location, resolve_store_uri, sqlite_path

pytestmark = pytest.mark.quick


@dataclass
class Cfg:
    """Stand-in for bitcpm.config.tracking.TrackingConfig."""

    backend: str = "none"
    uri: str | None = None
    experiment: str = "bitcpm"
    run_name: str | None = None
    log_interval: int = 10
    tags: dict[str, str] = field(default_factory=dict)


class RecordingTracker(Tracker):
    """Tracker that remembers how it was finished."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[str] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def _finish(self, status: str) -> None:
        self.finished.append(status)


def test_import_does_not_load_mlflow_or_torch():
    code = "import sys, bitcpm.tracking; print(sorted({'mlflow', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_none_backend_gives_null_tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_tracker(Cfg(), run_name="r", params={"a": {"b": 1}}, tags={"t": "v"}) as tracker:
        assert isinstance(tracker, NullTracker)
        assert tracker.run_id is None
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.log_artifact(tmp_path / "missing.yaml")
        tracker.log_text("x", "a.txt")
        tracker.set_tags({"k": "v"})
    assert tracker.closed
    assert list(tmp_path.iterdir()) == []


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown tracking backend 'wandb'"):
        open_tracker(Cfg(backend="wandb"), run_name="r", params={}, tags={})


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (None, "FINISHED"),
        (RuntimeError("x"), "FAILED"),
        (KeyboardInterrupt(), "KILLED"),
        (SystemExit(0), "FINISHED"),
        (SystemExit(3), "FAILED"),
    ],
)
def test_context_manager_status(exc, status):
    tracker = RecordingTracker()
    with pytest.raises(type(exc)) if exc else contextlib.nullcontext(), tracker:
        if exc:
            raise exc
    assert tracker.finished == [status]


def test_close_is_idempotent_and_validates_status():
    tracker = RecordingTracker()
    with pytest.raises(ValueError, match="FINISHED, FAILED, KILLED"):
        tracker.close("DONE")
    tracker.close("KILLED")
    tracker.close("FAILED")
    assert tracker.finished == ["KILLED"]


def test_store_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = resolve_store_uri(None)
    assert default == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sqlite_path(default) == tmp_path / "mlflow.db"
    assert resolve_store_uri("sqlite:///sub/x.db?timeout=5") == f"sqlite:///{tmp_path / 'sub/x.db'}?timeout=5"
    assert resolve_store_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert sqlite_path("sqlite:///:memory:") is None
    assert default_artifact_location(default) == (tmp_path / "mlartifacts").as_uri()
    assert default_artifact_location("http://h:1") is None


def test_safe_keys():
    assert safe_key("loss/train", 250) == "loss/train"
    assert safe_key("grad[0]=x", 250) == "grad_0__x"
    assert safe_key("/abs//path/", 250) == "_abs__path_"
    assert safe_key("..", 250) == "_.."
    long = safe_key("k" * 300, 250)
    assert len(long) == 250 and long != safe_key("k" * 301, 250)
    mapper = KeyMapper(250)
    assert mapper("a[0]") == "a_0_"
    assert mapper("a(0)") != "a_0_"
    assert mapper("a[0]") == "a_0_"


def test_truncate_and_batches():
    assert truncate("short", 10) == "short"
    cut = truncate("x" * 7000, 6000)
    assert len(cut) == 6000 and cut.endswith("...[truncated, 7000 chars]")
    assert [len(b) for b in batches(list(range(250)), 100, lambda _: 1)] == [100, 100, 50]
    assert [len(b) for b in batches(list(range(10)), 100, lambda _: 30, max_bytes=100)] == [3, 3, 3, 1]
