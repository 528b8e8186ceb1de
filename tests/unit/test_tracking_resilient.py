"""ResilientTracker against an in-process fake tracking server that can go down, fail or hang."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest

from bitcpm.tracking import resilient
from bitcpm.tracking.resilient import ResilientTracker
from bitcpm.tracking.spool import (
    MetricPoint,
    RunSpec,
    Spool,
    append_metrics,
    describe,
    is_permanent,
    read_metric_lines,
    rejected_path,
    replay_spool_file,
)

pytestmark = pytest.mark.quick


class Refused(Exception):
    """What the fake server raises for a request it understood and will never accept (HTTP 400)."""

    def get_http_status_code(self) -> int:
        return 400


class FakeServer:
    """State shared by every run of a fake tracking server."""

    def __init__(self) -> None:
        self.down = False
        self.fail_next = 0
        self.hang: threading.Event | None = None
        self.lose_create_reply = False
        self.requests = 0
        self.runs: dict[str, FakeRun] = {}

    def request(self) -> None:
        """One request: fails while down or for the next `fail_next` requests, blocks while hanging."""
        self.requests += 1
        if self.hang is not None:
            self.hang.wait()
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionResetError(104, "Connection reset by peer")


class FakeRun:
    """A run on the fake server; also the ReplayTarget the tracker talks to."""

    def __init__(self, server: FakeServer, run_id: str, spec: RunSpec) -> None:
        self.server = server
        self.run_id = run_id
        self.name = spec.run_name
        self.open_id = spec.open_id
        self.params = dict(spec.params)
        self.tags = dict(spec.tags)
        self.metrics: list[tuple[str, float, int, int]] = []
        self.texts: dict[str, str] = {}
        self.artifacts: list[str] = []
        self.status = "RUNNING"
        self.opened = 1
        # Like MlflowTracker: a closed run takes nothing more until it is opened or attached again.
        self.closed = False

    def log_metric_points(self, points: Iterable[MetricPoint]) -> None:
        points = list(points)
        if self.closed:
            raise RuntimeError(f"MLflow run {self.run_id} is already closed")
        self.server.request()
        if any("bad" in metrics for metrics, _, _ in points):
            raise Refused("INVALID_PARAMETER_VALUE: metric 'bad' rejected")
        for metrics, step, ts in points:
            self.metrics.extend((k, float(v), step, ts) for k, v in metrics.items() if v is not None)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.server.request()
        self.tags.update(tags)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.server.request()
        self.texts[artifact_file] = text

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.server.request()
        if not Path(path).exists():
            raise FileNotFoundError(path)
        self.artifacts.append(str(path))

    def close(self, status: str = "FINISHED") -> None:
        self.server.request()
        self.status = status
        self.closed = True

    def steps(self, key: str = "loss") -> list[int]:
        return [step for k, _, step, _ in self.metrics if k == key]


class FakeOpener:
    """RunOpener for the fake server."""

    uri = "http://fake:5000"

    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def open_run(self, spec: RunSpec, *, retry: bool = False) -> FakeRun:
        self.server.request()
        if spec.resume_run_id:
            run = self.server.runs.get(spec.resume_run_id)
            if run is None:
                raise ValueError(f"cannot resume MLflow run {spec.resume_run_id!r}: not found")
            run.status, run.closed = "RUNNING", False
            run.opened += 1
            run.tags.update(spec.tags)
            return run
        if retry:
            for run in self.server.runs.values():
                if run.open_id == spec.open_id:
                    run.closed = False
                    return run
        run = FakeRun(self.server, uuid.uuid4().hex, spec)
        self.server.runs[run.run_id] = run
        if self.server.lose_create_reply:
            self.server.lose_create_reply = False
            raise TimeoutError("read timed out")
        return run

    def attach_run(self, run_id: str) -> FakeRun:
        run = self.server.runs[run_id]
        run.closed = False
        return run


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def said(capsys) -> Callable[[], list[str]]:
    """The tracking warnings printed so far (they go to stderr, also from the sender thread)."""
    lines: list[str] = []

    def read() -> list[str]:
        lines.extend(capsys.readouterr().err.splitlines())
        return lines

    return read


@pytest.fixture
def open_resilient(server, tmp_path, monkeypatch) -> Callable[..., ResilientTracker]:
    monkeypatch.setattr(resilient, "RETRY_INTERVAL_S", 0.05)
    monkeypatch.setattr(resilient, "START_TIMEOUT_S", 2.0)
    monkeypatch.setattr(resilient, "CLOSE_TIMEOUT_S", 5.0)

    def make(resume_run_id: str | None = None, spool: Path | None = None) -> ResilientTracker:
        spec = RunSpec(run_name="r", params={"lr": "0.1"}, tags={"stage": "s1"}, resume_run_id=resume_run_id)
        return ResilientTracker(FakeOpener(server), spec, spool or tmp_path / "spool.jsonl")

    return make


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def spool_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def owed_steps(spool: Path) -> list[int]:
    """Steps of the metrics.jsonl lines the spool says the server still lacks."""
    sent = spool_lines(spool)[0]["metrics_sent"]
    metrics = spool.with_name("metrics.jsonl")
    return [line["step"] for _, line in read_metric_lines(metrics, sent, metrics.stat().st_size)]


def timed_log(tracker: ResilientTracker, step: int) -> float:
    start = time.perf_counter()
    tracker.log_metrics({"loss": 1.0 / step, "grad_norm": None}, step)
    return time.perf_counter() - start


def test_online_run_passes_through_without_spool(open_resilient, server, said, tmp_path):
    tracker = open_resilient()
    run = server.runs[tracker.run_id]
    assert run.params == {"lr": "0.1"} and run.tags["stage"] == "s1"
    for step in range(1, 4):
        tracker.log_metrics({"loss": 1.0 / step}, step)
    tracker.set_tags({"phase": "x"})
    tracker.log_text("a: 1\n", "config.yaml")
    tracker.close("KILLED")
    assert run.steps() == [1, 2, 3] and run.tags["phase"] == "x" and run.texts == {"config.yaml": "a: 1\n"}
    assert run.status == "KILLED"
    assert said() == [] and not (tmp_path / "spool.jsonl").exists()
    assert [line["step"] for line in spool_lines(tracker.metrics_path)] == [1, 2, 3]  # every metric, also locally
    with pytest.raises(RuntimeError, match="already closed"):
        tracker.log_metrics({"loss": 0.0}, 9)


def test_outage_spools_then_replays_in_order_with_original_timestamps(open_resilient, server, said, tmp_path):
    spool = tmp_path / "spool.jsonl"
    tracker = open_resilient()
    run = server.runs[tracker.run_id]
    for step in range(1, 6):
        tracker.log_metrics({"loss": 1.0 / step}, step)
    wait_for(lambda: len(run.metrics) == 5)
    server.down = True
    latencies = [timed_log(tracker, step) for step in range(6, 11)]
    tracker.set_tags({"phase": "during-outage"})
    tracker.log_text("notes", "notes.txt")
    assert max(latencies) < 0.05
    # Only what metrics.jsonl cannot hold is spooled: the metrics are owed from an offset of that file on.
    wait_for(lambda: spool.exists() and len(spool_lines(spool)) == 1 + 2)
    lines = spool_lines(spool)
    assert lines[0]["run_id"] == run.run_id and lines[0]["start"] is None
    assert [r["kind"] for r in lines[1:]] == ["tags", "text"]
    assert owed_steps(spool) == [6, 7, 8, 9, 10]
    spooled_ts = {line["step"]: line["timestamp_ms"] for line in spool_lines(tracker.metrics_path)[5:]}
    assert len(said()) == 1
    assert said()[0] == (
        "bitcpm: warning: MLflow at http://fake:5000 unreachable ([Errno 111] Connection refused); "
        f"spooling metrics to {spool} and retrying"
    )
    time.sleep(0.2)  # several retry intervals pass while down: still one warning
    assert len(said()) == 1
    server.down = False
    wait_for(lambda: not spool.exists())
    tracker.log_metrics({"loss": 1 / 11}, 11)
    tracker.close()
    assert run.steps() == list(range(1, 12))
    assert {step: ts for _, _, step, ts in run.metrics if step in spooled_ts} == spooled_ts
    assert run.tags["phase"] == "during-outage" and run.texts["notes.txt"] == "notes"
    assert run.status == "FINISHED"
    assert said()[1:] == ["bitcpm: MLflow at http://fake:5000 reachable again; spooled records replayed"]


def test_transient_failures_lose_and_duplicate_nothing(open_resilient, server, said):
    tracker = open_resilient()
    run = server.runs[tracker.run_id]
    for step in range(1, 31):
        if step in (5, 12, 20):
            server.fail_next = 3
        tracker.log_metrics({"loss": float(step)}, step)
        time.sleep(0.005)
    tracker.close()
    assert run.steps() == list(range(1, 31))
    assert [v for k, v, _, _ in run.metrics if k == "loss"] == [float(s) for s in range(1, 31)]
    assert len([m for m in said() if "warning" in m]) == 1
    assert run.status == "FINISHED"


def test_the_end_of_the_run_waits_for_the_metrics_logged_before_it(open_resilient, server):
    tracker = open_resilient()
    run = server.runs[tracker.run_id]
    hang = server.hang = threading.Event()
    tracker.log_metrics({"loss": 1.0}, 1)
    wait_for(lambda: server.requests == 2)  # step 1 is on its way (after the run's creation)
    tracker.log_metrics({"loss": 2.0}, 2)
    tracker.set_tags({"phase": "end"})
    closing = threading.Thread(target=tracker.close)
    closing.start()
    time.sleep(0.1)  # close() has queued the end of the run behind step 2 and the tags
    server.hang = None
    hang.set()
    closing.join()
    assert run.steps() == [1, 2] and run.tags["phase"] == "end" and run.status == "FINISHED"


def test_close_while_down_keeps_spool_and_next_start_replays_it(open_resilient, server, said, tmp_path):
    spool = tmp_path / "spool.jsonl"
    first = open_resilient()
    run = server.runs[first.run_id]
    first.log_metrics({"loss": 1.0}, 1)
    wait_for(lambda: run.steps() == [1])
    server.down = True
    for step in (2, 3):
        first.log_metrics({"loss": float(step)}, step)
    start = time.monotonic()
    first.close("KILLED")
    assert time.monotonic() - start < 1.0  # refused connections fail fast; no waiting for the timeout
    assert run.status == "RUNNING" and run.steps() == [1]
    assert [r["kind"] for r in spool_lines(spool)[1:]] == ["finish"] and owed_steps(spool) == [2, 3]
    assert said()[-1] == (
        "bitcpm: warning: MLflow at http://fake:5000 still unreachable at close; 3 record(s) kept in "
        f"{spool}; the next start with this spool replays them into run {run.run_id}"
    )
    # The next session resumes the run from its checkpoint while the server is back.
    server.down = False
    second = open_resilient(resume_run_id=run.run_id)
    assert second.run_id == run.run_id
    second.log_metrics({"loss": 4.0}, 4)
    wait_for(lambda: run.steps() == [1, 2, 3, 4])
    assert run.status == "RUNNING"  # the leftover end-of-run record did not end the resumed run
    second.close()
    assert run.status == "FINISHED" and run.steps() == [1, 2, 3, 4] and not spool.exists()


def test_down_at_start_spools_the_run_and_creates_it_later(open_resilient, server, said, tmp_path):
    spool = tmp_path / "spool.jsonl"
    server.down = True
    start = time.monotonic()
    tracker = open_resilient()
    assert time.monotonic() - start < 1.0
    assert tracker.run_id is None and server.runs == {}
    for step in (1, 2):
        assert timed_log(tracker, step) < 0.05
    tracker.log_text("cfg", "config.yaml")
    wait_for(lambda: spool.exists() and len(spool_lines(spool)) == 2)
    header = spool_lines(spool)[0]
    assert header["run_id"] is None and owed_steps(spool) == [1, 2]
    assert header["start"]["run_name"] == "r" and header["start"]["params"] == {"lr": "0.1"}
    assert header["start"]["tags"] == {"stage": "s1"}
    assert len(said()) == 1 and "unreachable" in said()[0]
    server.down = False
    wait_for(lambda: tracker.run_id is not None)
    run = server.runs[tracker.run_id]
    wait_for(lambda: run.steps() == [1, 2])
    # Created after open returned: the id stays pinned in the spool until close in case we crash.
    wait_for(lambda: spool_lines(spool) == [{"bitcpm_spool": 1, "run_id": run.run_id, "start": None, "pinned": True}])
    tracker.log_metrics({"loss": 0.3}, 3)
    tracker.close()
    assert run.steps() == [1, 2, 3] and run.texts == {"config.yaml": "cfg"} and run.params == {"lr": "0.1"}
    assert run.status == "FINISHED" and len(server.runs) == 1 and not spool.exists()


def test_down_for_a_whole_session_then_adopted_by_the_next(open_resilient, server, said, tmp_path):
    spool = tmp_path / "spool.jsonl"
    server.down = True
    first = open_resilient()
    first.log_metrics({"loss": 1.0}, 1)
    first.close("FAILED")
    assert spool_lines(spool)[0]["start"]["run_name"] == "r"
    assert "replays them into run (not created yet)" in said()[-1]
    server.down = False
    second = open_resilient()  # no run id in the checkpoint: the spool is adopted by the new run
    run = server.runs[second.run_id]
    second.log_metrics({"loss": 2.0}, 2)
    second.close()
    assert run.steps() == [1, 2] and run.status == "FINISHED" and len(server.runs) == 1


def test_pinned_run_is_resumed_when_the_checkpoint_has_no_id(open_resilient, server, tmp_path):
    spool = tmp_path / "spool.jsonl"
    server.down = True
    first = open_resilient()
    server.down = False
    wait_for(lambda: first.run_id is not None)
    run_id = first.run_id
    first.log_metrics({"loss": 1.0}, 1)
    wait_for(lambda: server.runs[run_id].steps() == [1])
    # Crash (no close) once all was sent: the spool keeps the run's id, as the checkpoint predates the run.
    wait_for(lambda: spool_lines(spool) == [{"bitcpm_spool": 1, "run_id": run_id, "start": None, "pinned": True}])
    second = open_resilient(resume_run_id=None)
    assert second.run_id == run_id and len(server.runs) == 1
    second.close()
    assert not spool.exists()


def test_leftovers_of_another_run_are_replayed_into_that_run(open_resilient, server, said, tmp_path):
    old = open_resilient()
    server.down = True
    old.log_metrics({"loss": 1.0}, 1)
    old.close("KILLED")
    old_run = server.runs[old.run_id]
    server.down = False
    other = open_resilient(spool=tmp_path / "other.jsonl")
    other.close()
    # A checkpoint names a different run than the leftovers do.
    new = open_resilient(resume_run_id=other.run_id)
    aside = tmp_path / f"spool.{old_run.run_id}.jsonl"
    assert any(str(aside) in line for line in said())
    wait_for(lambda: old_run.status == "KILLED" and not aside.exists())
    assert old_run.steps() == [1]
    new.close()
    assert server.runs[other.run_id].steps() == []


def test_leftovers_of_a_resume_that_never_reached_the_server_go_to_their_run(open_resilient, server, tmp_path):
    spool = tmp_path / "spool.jsonl"
    old = open_resilient(spool=tmp_path / "old.jsonl")
    old.close("KILLED")
    server.down = True
    offline = open_resilient(resume_run_id=old.run_id)  # resumes while down: the spool has no run id, only a start
    offline.log_metrics({"loss": 1.0}, 1)
    offline.close("KILLED")
    assert spool_lines(spool)[0]["start"]["resume_run_id"] == old.run_id
    server.down = False
    other = open_resilient(spool=tmp_path / "other.jsonl")
    other.close()
    new = open_resilient(resume_run_id=other.run_id)
    wait_for(lambda: server.runs[old.run_id].steps() == [1])
    new.close()
    assert server.runs[old.run_id].status == "KILLED" and server.runs[other.run_id].steps() == []
    assert not (tmp_path / f"spool.{old.run_id}.jsonl").exists() and not spool.exists()


def test_refusal_at_start_is_raised(open_resilient, server, tmp_path):
    with pytest.raises(ValueError, match="cannot resume MLflow run 'nope'"):
        open_resilient(resume_run_id="nope")
    assert not (tmp_path / "spool.jsonl").exists()


def test_lost_create_reply_does_not_create_a_second_run(open_resilient, server):
    server.lose_create_reply = True
    tracker = open_resilient()
    wait_for(lambda: tracker.run_id is not None)
    tracker.close()
    assert len(server.runs) == 1 and server.runs[tracker.run_id].status == "FINISHED"


def test_refused_records_are_kept_aside_and_do_not_block(open_resilient, server, said, tmp_path):
    spool = tmp_path / "spool.jsonl"
    tracker = open_resilient()
    run = server.runs[tracker.run_id]
    server.down = True
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.log_metrics({"bad": 1.0}, 2)
    tracker.log_metrics({"loss": 3.0}, 3)
    wait_for(lambda: spool.exists())
    server.down = False
    tracker.log_metrics({"bad": 4.0}, 4)  # refused live too
    tracker.close()
    assert run.steps() == [1, 3]
    rejected = spool_lines(rejected_path(spool))
    assert [r["step"] for r in rejected] == [2, 4] and "INVALID_PARAMETER_VALUE" in rejected[0]["error"]
    assert not spool.exists() and run.status == "FINISHED"


def test_hung_server_neither_blocks_nor_reorders(open_resilient, server, tmp_path):
    tracker = open_resilient()
    run = server.runs[tracker.run_id]
    server.hang = threading.Event()  # the server accepts connections but never answers
    latencies = [timed_log(tracker, step) for step in range(1, 21)]
    assert max(latencies) < 0.05
    server.hang.set()
    server.hang = None
    tracker.close()
    assert run.steps() == list(range(1, 21))


def test_close_gives_up_on_a_hung_server_within_its_timeout(open_resilient, server, said, tmp_path, monkeypatch):
    spool = tmp_path / "spool.jsonl"
    tracker = open_resilient()
    monkeypatch.setattr(resilient, "CLOSE_TIMEOUT_S", 0.3)
    run = server.runs[tracker.run_id]
    hang = threading.Event()
    server.hang = hang
    for step in range(1, 4):
        tracker.log_metrics({"loss": float(step)}, step)
    start = time.monotonic()
    tracker.close()
    assert time.monotonic() - start < 1.0
    assert owed_steps(spool) == [1, 2, 3]
    assert "still unreachable at close" in said()[-1]
    server.hang = None
    hang.set()
    # Next start: step 1 may have landed after all (its send was in flight); it is not sent twice.
    wait_for(lambda: server.requests >= 2)
    again = open_resilient(resume_run_id=run.run_id)
    again.close()
    assert sorted(set(run.steps())) == [1, 2, 3]


def test_start_times_out_on_a_hung_server_and_goes_on_offline(open_resilient, server, tmp_path, monkeypatch):
    hang = threading.Event()
    server.hang = hang
    monkeypatch.setattr(resilient, "START_TIMEOUT_S", 0.2)
    start = time.monotonic()
    tracker = open_resilient()
    assert time.monotonic() - start < 1.0 and tracker.run_id is None
    tracker.log_metrics({"loss": 1.0}, 1)
    server.hang = None
    hang.set()
    wait_for(lambda: tracker.run_id is not None)
    tracker.close()
    assert server.runs[tracker.run_id].steps() == [1]


def test_replay_spool_file_creates_the_run_from_the_spooled_start(server, tmp_path, open_resilient):
    spool = tmp_path / "spool.jsonl"
    server.down = True
    tracker = open_resilient()
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.close()
    server.down = False
    assert replay_spool_file(FakeOpener(server), spool) == 2
    (run,) = server.runs.values()
    assert run.steps() == [1] and run.status == "FINISHED" and run.params == {"lr": "0.1"}
    assert not spool.exists()
    assert replay_spool_file(FakeOpener(server), spool) == 0


def test_metrics_lines_keep_their_time_and_a_torn_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = append_metrics(path, {"loss": float("nan"), "grad_norm": None}, 1)
    with path.open("a") as out:
        out.write('{"step": 2, "lo\n')  # torn by a crash mid-write
    end = append_metrics(path, {"loss": 0.5}, 3)
    lines = read_metric_lines(path, 0, end)
    assert lines[0][0] == first and lines[-1][0] == end
    assert [line and line["step"] for _, line in lines] == [1, None, 3]
    assert set(lines[0][1]) == {"step", "timestamp_ms", "loss"} and lines[0][1]["timestamp_ms"] > 0
    assert read_metric_lines(path, first, end, limit=1) == [lines[1]]


def test_spool_round_trip_drops_what_it_cannot_send(tmp_path):
    spool = Spool(tmp_path / "s.jsonl", run_id="abc", metrics_sent=7)
    spool.records = [{"kind": "tags", "tags": {"a": "1"}}, {"kind": "finish", "status": "KILLED"}]
    spool.save()
    with spool.path.open("a") as out:
        out.write('{"seq": 3, "kind": "metrics", "step": 1, "ts": 5, "metrics": {"x": 1.0}}\n{"kind": "ta\n')
    loaded = Spool.load(spool.path)
    assert (loaded.run_id, loaded.metrics_sent, loaded.records) == ("abc", 7, spool.records)
    spool.save(backlog=False)  # the run's id alone, unpinned, says nothing
    assert not spool.path.exists()


def test_error_classification_and_description():
    assert is_permanent(Refused()) and is_permanent(ValueError()) and is_permanent(FileNotFoundError())
    assert not is_permanent(ConnectionRefusedError(111, "Connection refused"))

    class Status(Exception):
        def __init__(self, code: int) -> None:
            self.code = code

        def get_http_status_code(self) -> int:
            return self.code

    assert [is_permanent(Status(c)) for c in (400, 404, 401, 403, 429, 500, 503)] == [True, True] + [False] * 5
    long = (
        "API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (Caused by NewConnectionError("
        "\"HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new connection: "
        '[Errno 111] Connection refused"))'
    )
    assert describe(RuntimeError(long)) == "[Errno 111] Connection refused"
    assert describe(RuntimeError("Read timed out. (read timeout=10)")) == "timed out"
