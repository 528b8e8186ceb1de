"""`python -m bitcpm.eval RUN_OR_EXPORT tasks=a,b [key=value ...]`: lm-evaluation-harness on a trained model.

Keys: tasks (required, comma-separated), task_dir (directory of local YAML task files), baseline (a
full-precision run or export, or `auto` = the target's stage.init_from: prints the retention table),
limit (documents per task), batch_size, export_dir (keep the HF export of a run there), tracking.uri
(MLflow store; default the run's), offline (true: registry tasks read only the local dataset cache).
Results are logged to the run's MLflow run as eval/<task>/<metric> (and eval/<task>/retention).
"""

from __future__ import annotations

import sys

KEYS = ("tasks", "task_dir", "baseline", "limit", "batch_size", "export_dir", "tracking.uri", "offline")


def parse(argv: list[str]) -> tuple[str, dict[str, str]]:
    """(target, key=value options); ValueError (one line) on anything else."""
    target, options = None, {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            if target is not None:
                raise ValueError(f"{arg}: one RUN_OR_EXPORT only (options are key=value)")
            target = arg
        elif key not in KEYS:
            raise ValueError(f"{key}: unknown key (expected one of {', '.join(KEYS)})")
        else:
            options[key] = value
    if target is None:
        raise ValueError("usage: python -m bitcpm.eval RUN_OR_EXPORT tasks=a,b [task_dir=DIR] [baseline=RUN|auto]")
    if not options.get("tasks"):
        raise ValueError("tasks: required (comma-separated task names)")
    for key in ("limit", "batch_size"):
        if key in options and not options[key].isdigit():
            raise ValueError(f"{key}={options[key]}: expected a positive integer")
    if options.get("offline", "true") not in ("true", "false"):
        raise ValueError(f"offline={options['offline']}: expected true or false")
    return target, options


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bitcpm.eval` and `bitcpm-eval`."""
    try:
        target, options = parse(sys.argv[1:] if argv is None else argv)
        from bitcpm.evaluation.evaluate import evaluate

        return evaluate(target, options)
    except ValueError as exc:  # config, task and source errors are one line
        print(f"bitcpm.eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
