"""Worker entry point: `python -m bitcpm.worker RUN_DIR/config.yaml`, one process per rank.

Launchers start this module by name (local in-process, torchrun, Slurm, Ascend scripts); it reads the
resolved config the front end wrote into the run directory. Exit codes: 0 finished (or already
complete), 2 bad configuration or input, 3 stopped on a NaN/inf after saving the last good state,
4 a checkpoint did not fit on its filesystem (the previous complete checkpoint is intact), 75 stopped
by a signal after saving a complete checkpoint (resumable: rerunning the same command continues),
anything else a crash.
"""

from __future__ import annotations

import sys
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
        print(f"bitcpm: error: {exc}", file=sys.stderr)
        return 2
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
        print(f"bitcpm: error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteError as exc:
        print(f"bitcpm: error: {exc}", file=sys.stderr)
        return 3
    except CheckpointDiskFullError as exc:
        print(f"bitcpm: error: {exc.strerror}", file=sys.stderr)
        return 4
    if result.status == "preempted":
        return EXIT_PREEMPTED
    mark_finished(config_path.parent, result.step, result.metrics)
    return 0


STACK_ERROR_FILE = "worker_error.txt"


def _stack_error(problem: str, run_dir: Path) -> int:
    """Report a missing device stack: one line on stderr and in RUN_DIR/worker_error.txt (rank 0), exit 2."""
    import os

    print(f"bitcpm: error: {problem}", file=sys.stderr)
    if os.environ.get("RANK", "0") == "0" and run_dir.is_dir():
        (run_dir / STACK_ERROR_FILE).write_text(problem + "\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
