"""Worker entry point: `python -m bitcpm.worker RUN_DIR/config.yaml`, one process per rank.

Launchers start this module by name (local in-process, torchrun, Slurm, Ascend scripts); it reads the
resolved config the front end wrote into the run directory. Exit codes: 0 finished (or already
complete), 2 bad configuration or input, 3 stopped on a NaN/inf after saving the last good state,
4 a checkpoint did not fit on its filesystem (the previous complete checkpoint is intact), 75 stopped
by a signal after saving a complete checkpoint (resumable: rerunning the same command continues),
anything else a crash.

In a multi-rank job each error is said once: a rank whose collective breaks because another rank failed first stays
quiet (that rank reports), and under bitcpm's local launcher (launchers/elastic.py) a failing rank leaves its line, or
its traceback, in the directory named by BITCPM_RANK_ERRORS for the launcher to print once for the whole job.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the training described by the config file given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bitcpm.worker RUN_DIR/config.yaml", file=sys.stderr)
        return 2
    config_path = Path(args[0])
    from bitcpm.backends.megatron_notices import hide_known_warnings

    hide_known_warnings()  # before megatron is imported: its fallback notices are expected here
    from bitcpm.backends.stack import stack_problem
    from bitcpm.config.load import load_job
    from bitcpm.config.validate import ConfigError

    try:
        job = load_job(config_path)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return fail(2, str(exc))
    problem = stack_problem(job.hardware.device)  # first, before megatron: one line instead of a traceback
    if problem is not None:
        return _stack_error(problem, config_path.parent)
    from bitcpm.training.checkpoint_write import CheckpointDiskFullError
    from bitcpm.training.finished_marker import mark_finished
    from bitcpm.training.run import NonFiniteError, run_training
    from bitcpm.training.signals import EXIT_PREEMPTED

    try:
        result = run_training(job, config_path.parent)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return fail(2, str(exc))
    except NonFiniteError as exc:
        return fail(3, str(exc))
    except CheckpointDiskFullError as exc:
        return fail(4, exc.strerror)
    except Exception as exc:
        if peer_failed(exc):  # another rank failed first and says why: this rank's broken collective adds nothing
            return _quiet_after_peer(exc)
        if leave_for_launcher(1, traceback.format_exc().rstrip()):
            return 1
        raise
    if result.status == "preempted":
        return EXIT_PREEMPTED
    mark_finished(config_path.parent, result.step, result.metrics)
    return 0


# Set by launchers/elastic.py (launchers import nothing of bitcpm, so the name is written in both places).
RANK_ERRORS_ENV = "BITCPM_RANK_ERRORS"
EXIT_PEER_FAILED = 1
# How a collective (gloo, NCCL, HCCL, the rendezvous store) fails when a peer process is gone.
PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote process exited",
    "NCCL communicator was aborted",
)


def leave_for_launcher(code: int, text: str) -> bool:
    """Under bitcpm's local multi-rank launcher, leave this rank's error for it to print once; False elsewhere."""
    directory = os.environ.get(RANK_ERRORS_ENV)
    if not directory or not Path(directory).is_dir():
        return False
    path = Path(directory) / f"rank_{os.environ.get('RANK', '0')}"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{code}\n{text}\n")
    tmp.replace(path)  # whole or absent: the launcher may read it any time after this rank exits
    return True


def fail(code: int, message: str) -> int:
    """This rank's one-line error (printed, or left for the launcher when it reports for every rank); the code."""
    line = f"bitcpm: error: {message}"
    if not leave_for_launcher(code, line):
        print(line, file=sys.stderr)
    return code


def peer_failed(exc: BaseException) -> bool:
    """Whether the exception is this rank's collective breaking because another rank failed or exited first."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    directory = os.environ.get(RANK_ERRORS_ENV)
    ours = f"rank_{os.environ.get('RANK', '0')}"
    if directory and any(p.name != ours for p in Path(directory).glob("rank_*")):
        return True  # another rank has reported already
    import torch.distributed as dist

    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, getattr(dist, "DistError", ())) or any(s in str(chain) for s in PEER_GONE):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


def _quiet_after_peer(exc: BaseException) -> int:
    """Exit after a peer's failure: silently under the local launcher (it prints the peer's error), else one line
    (each rank's log is read on its own there, e.g. under Slurm)."""
    if not os.environ.get(RANK_ERRORS_ENV):
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        rank = os.environ.get("RANK", "0")
        print(f"bitcpm: error: rank {rank} stopped: another rank failed first ({first.strip()})", file=sys.stderr)
    return EXIT_PEER_FAILED


STACK_ERROR_FILE = "worker_error.txt"


def _stack_error(problem: str, run_dir: Path) -> int:
    """Report a missing device stack: one line on stderr and in RUN_DIR/worker_error.txt (rank 0), exit 2."""
    if os.environ.get("RANK", "0") == "0" and run_dir.is_dir():
        (run_dir / STACK_ERROR_FILE).write_text(problem + "\n")
    return fail(2, problem)


if __name__ == "__main__":
    sys.exit(main())
