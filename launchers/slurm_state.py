"""Submitted jobs of a run (RUN_DIR/launch/jobs.json) and their true Slurm state (sacct, else squeue)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

JOBS_FILE = "jobs.json"
TERMINAL = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)
# States a job can leave again; REQUEUED is what sacct shows for an attempt that was put back in the queue.
UNKNOWN = "UNKNOWN"


@dataclass
class JobRecord:
    """One submitted Slurm job (or array element) of a run."""

    job_id: str
    """'123', or '123_4' for element 4 of an array."""
    run_dir: str
    """The run it trains."""
    log: str
    """stdout/stderr of task 0."""
    submitted_at: str
    """Local time of submission."""
    launcher: str = "slurm"
    """Launcher that submitted it."""
    dependencies: list[str] = field(default_factory=list)
    """Job ids it waits for (afterok)."""


@dataclass
class JobState:
    """Where a job stands."""

    job_id: str
    state: str
    exit_code: str = ""
    elapsed: str = ""
    restarts: int = 0
    source: str = "sacct"
    """'sacct' (accounting: true final states), 'squeue' (queued/running only) or 'none'."""

    @property
    def terminal(self) -> bool:
        """The job will not run again."""
        return self.state in TERMINAL


def append_records(launch_dir: Path, records: list[JobRecord]) -> None:
    """Add submissions to RUN_DIR/launch/jobs.json (a run keeps the history of every submission)."""
    launch_dir = Path(launch_dir)
    launch_dir.mkdir(parents=True, exist_ok=True)
    data = {"jobs": [asdict(r) for r in read_records(launch_dir) + records]}
    tmp = launch_dir / f"{JOBS_FILE}.tmp.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, launch_dir / JOBS_FILE)


def read_records(launch_dir: Path) -> list[JobRecord]:
    """Every recorded submission, oldest first."""
    path = Path(launch_dir) / JOBS_FILE
    if not path.exists():
        return []
    return [JobRecord(**r) for r in json.loads(path.read_text()).get("jobs", [])]


def _base(job_id: str) -> str:
    return job_id.split("_", 1)[0]


def _expand(job_id: str) -> list[str]:
    # '123_[0-3,7%2]' (a pending array) -> ['123_0', ..., '123_3', '123_7']; anything else is itself.
    m = re.fullmatch(r"(\d+)_\[([^\]%]+)(?:%\d+)?\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split(","):
        low, _, high = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


def parse_sacct(text: str) -> dict[str, JobState]:
    """Rows of `sacct -X -n -P --duplicates -o JobID,State,ExitCode,Elapsed` -> the latest state per job id."""
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        job_id, state, exit_code, elapsed = parts[:4]
        state = state.split()[0] if state else UNKNOWN  # 'CANCELLED by 0'
        for jid in _expand(job_id):
            previous = out.get(jid)
            restarts = (previous.restarts if previous else 0) + (state == "REQUEUED")
            out[jid] = JobState(jid, state, exit_code, elapsed, restarts)
    return out


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None


def query_states(job_ids: list[str]) -> dict[str, JobState]:
    """State of each job: sacct when accounting is on, else squeue (a job gone from the queue is UNKNOWN)."""
    if not job_ids:
        return {}
    bases = sorted({_base(j) for j in job_ids})
    cmd = ["sacct", "-X", "-n", "-P", "--duplicates", "-o", "JobID,State,ExitCode,Elapsed", "-j", ",".join(bases)]
    result = _run(cmd)
    if result is not None and result.returncode == 0 and "disabled" not in result.stderr:
        states = parse_sacct(result.stdout)
        # A job sacct does not know yet (just submitted) is pending.
        return {j: states.get(j, JobState(j, "PENDING")) for j in job_ids}
    queued = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(bases)])
    states = {}
    if queued is not None and queued.returncode == 0:
        for line in queued.stdout.splitlines():
            jid, _, state = line.strip().partition("|")
            states[jid] = JobState(jid, state, source="squeue")
    return {j: states.get(j, JobState(j, UNKNOWN, source="none")) for j in job_ids}
