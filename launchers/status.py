"""`python -m launchers.status RUN_DIR... | --all [--root outputs]`: the true Slurm state of a run's jobs.

States come from accounting (sacct), so a failed job reads FAILED, a requeued one shows its restarts, and a job
that hit its time limit reads TIMEOUT; without accounting only queued/running jobs are known (squeue).
Exit code 1 when any shown job ended in a state other than COMPLETED; 2, with one line, when an argument names no
run with submitted jobs (missing, not a directory, never submitted, or an unreadable launch/jobs.json).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from launchers.restarts import read_restarts
from launchers.slurm_state import JOBS_FILE, TERMINAL, JobRecord, query_states, read_records


class _Parser(argparse.ArgumentParser):
    """Errors are one line, exit 2 (as bitcpm.config.arguments.OneLineParser; launchers import nothing of bitcpm)."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


class _Kind:
    """An argparse type checking what an argument names; `kind` says which (the tests generate bad values by it)."""

    def __init__(self, kind: str, check: Callable[[str], object]) -> None:
        self.kind, self.check, self.__name__ = kind, check, kind

    def __call__(self, text: str) -> object:
        try:
            return self.check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


def _records_of(run_dir: Path) -> list[JobRecord]:
    """The run's recorded submissions; ValueError (one line) when jobs.json cannot be read."""
    try:
        return read_records(run_dir / "launch")
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{run_dir / 'launch' / JOBS_FILE}: cannot be read ({' '.join(str(exc).split())})") from None


def submitted_run(text: str) -> Path:
    """A run directory whose jobs were submitted (RUN_DIR/launch/jobs.json readable)."""
    path = Path(text)
    if not path.exists():
        raise ValueError(f"{path}: no such run directory")
    if not path.is_dir():
        raise ValueError(f"{path}: is a file, expected a run directory")
    if not (path / "launch" / JOBS_FILE).is_file():
        raise ValueError(f"{path}: no launch/{JOBS_FILE} (nothing of it was submitted to Slurm)")
    _records_of(path)
    return path


def existing_dir(text: str) -> Path:
    """A directory that exists."""
    path = Path(text)
    if not path.is_dir():
        raise ValueError(f"{path}: {'is a file, expected a directory' if path.exists() else 'no such directory'}")
    return path


SUBMITTED_RUN = _Kind("submitted_run", submitted_run)
DIRECTORY = _Kind("directory", existing_dir)


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories under root that have submitted jobs."""
    return sorted(p.parent.parent for p in Path(root).glob(f"*/launch/{JOBS_FILE}"))


def latest_records(run_dirs: list[Path], history: bool) -> list[JobRecord]:
    """Each run's newest submission (or all of them)."""
    out = []
    for run_dir in run_dirs:
        records = _records_of(run_dir)
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


def parser() -> argparse.ArgumentParser:
    """The command line; every argument's kind is checked as it is read."""
    p = _Parser(prog="python -m launchers.status", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="*", type=SUBMITTED_RUN, help="run directories (RUN_DIR with launch/jobs.json)")
    p.add_argument("--all", action="store_true", help="every run under --root")
    p.add_argument("--root", type=DIRECTORY, default=Path("outputs"), help="parent of run directories (with --all)")
    p.add_argument("--history", action="store_true", help="every submission, not only each run's newest")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = parser()
    args = p.parse_args(argv)
    if not args.run_dirs and not args.all:
        p.error("give RUN_DIR(s) or --all")
    if args.all:
        try:  # the default is not checked while parsing
            existing_dir(str(args.root))
        except ValueError as exc:
            p.error(f"argument --root: {exc}")
    try:
        run_dirs = find_run_dirs(args.root) if args.all else list(args.run_dirs)
        records = latest_records(run_dirs, args.history)
    except ValueError as exc:
        p.error(str(exc))
    if not records:
        print(f"no submitted jobs found in {', '.join(map(str, run_dirs)) or args.root}")
        return 0
    text, bad = render(records)
    print(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
