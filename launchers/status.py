"""`python -m launchers.status RUN_DIR... | --all [--root outputs]`: the true Slurm state of a run's jobs.

States come from accounting (sacct), so a failed job reads FAILED, a requeued one shows its restarts, and a job
that hit its time limit reads TIMEOUT; without accounting only queued/running jobs are known (squeue).
Exit code 1 when any shown job ended in a state other than COMPLETED.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launchers.restarts import read_restarts
from launchers.slurm_state import JOBS_FILE, TERMINAL, JobRecord, query_states, read_records


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories under root that have submitted jobs."""
    return sorted(p.parent.parent for p in Path(root).glob(f"*/launch/{JOBS_FILE}"))


def latest_records(run_dirs: list[Path], history: bool) -> list[JobRecord]:
    """Each run's newest submission (or all of them)."""
    out = []
    for run_dir in run_dirs:
        records = read_records(run_dir / "launch")
        out += records if history else records[-1:]
    return out


def render(records: list[JobRecord]) -> tuple[str, bool]:
    """Table of job states; second value: whether any job ended badly."""
    states = query_states([r.job_id for r in records])
    rows = [("JOB", "STATE", "EXIT", "ELAPSED", "RESTARTS", "RUN")]
    bad = False
    for r in records:
        st = states[r.job_id]
        restarts = read_restarts(Path(r.run_dir) / "launch")["count"]
        state = st.state if st.source != "none" else "UNKNOWN (not queued; no Slurm accounting)"
        rows.append((r.job_id, state, st.exit_code, st.elapsed, str(max(restarts, st.restarts)), r.run_dir))
        bad |= st.state in TERMINAL and st.state != "COMPLETED"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows]
    failed = [r for r in records if states[r.job_id].state in TERMINAL - {"COMPLETED"}]
    lines += [f"log of {r.job_id}: {r.log}" for r in failed]
    return "\n".join(lines), bad


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m launchers.status", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run directories (RUN_DIR with launch/jobs.json)")
    parser.add_argument("--all", action="store_true", help="every run under --root")
    parser.add_argument("--root", type=Path, default=Path("outputs"), help="parent of run directories")
    parser.add_argument("--history", action="store_true", help="every submission, not only each run's newest")
    args = parser.parse_args(argv)
    if not args.run_dirs and not args.all:
        parser.error("give RUN_DIR(s) or --all")
    run_dirs = find_run_dirs(args.root) if args.all else list(args.run_dirs)
    records = latest_records(run_dirs, args.history)
    if not records:
        print(f"no submitted jobs found in {', '.join(map(str, run_dirs)) or args.root}")
        return 0
    text, bad = render(records)
    print(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
