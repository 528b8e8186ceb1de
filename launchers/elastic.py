"""`python -m launchers.elastic TORCHRUN_ARGS...`: torchrun for local multi-rank jobs, keeping the ranks' exit codes.

torchrun's agent turns a Ctrl-C into a SignalException traceback and any rank's non-zero exit into a
ChildFailedError report with exit code 1, which hides the ranks' own codes (75: stopped after saving).
Here the agent leaves SIGINT to this module, which passes it on to the ranks (each runs in its own
session, so the terminal's Ctrl-C reaches only the front end and this agent); the ranks finish their
step, save and exit, and this process exits with their code, quietly when every rank stopped cleanly.

A job that fails says why once: each failing rank leaves its one-line error (or its traceback) in a directory this
process names in BITCPM_RANK_ERRORS instead of printing it, ranks whose collectives break because of it stay quiet,
and this process prints the first failure's text alone (torch's own agent log lines about it are silenced).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

EXIT_PREEMPTED = 75  # bitcpm.training.signals.EXIT_PREEMPTED (launchers do not import bitcpm's training code)
# torchrun's default set minus SIGINT, which this module forwards itself.
AGENT_SIGNALS = "SIGTERM,SIGHUP,SIGQUIT"
RANK_ERRORS_ENV = "BITCPM_RANK_ERRORS"  # bitcpm.worker.RANK_ERRORS_ENV


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None once the process is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == parent:
            out.append(int(entry.name))
    return out


def _exited(pid: int) -> bool:
    fields = _stat(pid)
    return fields is None or fields[0] in ("Z", "X")  # a zombie has exited; the agent reaps it


def _forward(signum: int, _frame: FrameType | None) -> None:
    """Pass the signal to every rank, then wait until all have exited.

    Waiting here keeps the agent from reacting to the first rank that exits (it would SIGTERM the others
    while they finish their save); afterwards it finds every rank exited and reports their codes.
    """
    ranks = child_pids(os.getpid())
    for pid in ranks:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(pid, signum)
    while not all(_exited(pid) for pid in ranks):
        time.sleep(0.1)


def exit_code(codes: list[int]) -> int:
    """The job's exit code from its failed ranks' codes (negative: killed by that signal)."""
    if codes and all(code == EXIT_PREEMPTED for code in codes):
        return EXIT_PREEMPTED
    first = next((c for c in codes if c not in (0, EXIT_PREEMPTED)), codes[0] if codes else 1)
    return 128 - first if first < 0 else first


def first_report(directory: Path) -> tuple[int, str] | None:
    """(exit code, text) the first failing rank left (by the time it wrote it), or None when none left one."""
    reports = sorted(directory.glob("rank_*"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    if not reports:
        return None
    code, _, text = reports[0].read_text().partition("\n")
    return int(code), text.rstrip("\n")


def _describe(rank: int, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"bitcpm: error: rank {rank} was killed by {name}"
    return f"bitcpm: error: rank {rank} exited with code {code}"


def main(argv: list[str] | None = None) -> int:
    """Run torchrun's agent in this process and return the ranks' exit code."""
    signal.signal(signal.SIGINT, _forward)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # The agent logs each failure and each rank it stops; the failing rank's own error, printed below, says it.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    reports = Path(tempfile.mkdtemp(prefix="bitcpm-rank-errors-"))
    os.environ[RANK_ERRORS_ENV] = str(reports)  # the ranks inherit it
    try:
        run(parse_args([f"--signals-to-handle={AGENT_SIGNALS}", *(sys.argv[1:] if argv is None else argv)]))
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items(), key=lambda item: (item[1].timestamp, item[0]))
        code = exit_code([failure.exitcode for _, failure in failures])
        report = first_report(reports)
        if report is not None:  # a rank's own words, once for the whole job
            print(report[1], file=sys.stderr)
            return report[0]
        if code != EXIT_PREEMPTED:
            rank, failure = failures[0]
            print(_describe(rank, failure.exitcode), file=sys.stderr)
        return code
    except SignalException as exc:  # SIGTERM/SIGHUP/SIGQUIT: torchrun already passed it on to the ranks
        return 128 + int(exc.sigval)
    finally:
        os.environ.pop(RANK_ERRORS_ENV, None)
        shutil.rmtree(reports, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
