"""`python -m bitcpm.eval RUN_OR_EXPORT tasks=a,b [key=value ...]`: lm-evaluation-harness on a trained model.

Keys: tasks (required, comma-separated), task_dir (directory of local YAML task files), baseline (a
full-precision run or export, or `auto` = the target's stage.init_from: prints the retention table),
limit (documents per task), batch_size, export_dir (keep the HF export of a run there), tracking.uri
(MLflow store; default the run's), offline (true: registry tasks read only the local dataset cache).
Results are logged to the run's MLflow run as eval/<task>/<metric> (and eval/<task>/retention).
Every argument is checked before anything is exported or evaluated: a bad one is one line, exit status 2.
"""

from __future__ import annotations

import sys

from bitcpm.config.arguments import DIRECTORY, OUTPUT_DIR, Kind, choice, fail, number, text
from bitcpm.config.ranges import AT_LEAST_1
from bitcpm.export.inputs import RUN_OR_HF

TARGET = RUN_OR_HF
"""The evaluated model: a bitcpm run or checkpoint (exported on the fly) or a Hugging Face export."""
BASELINE = Kind("run_or_hf", lambda value: value if value == "auto" else RUN_OR_HF.check(value), (("auto", True),))
KEYS: dict[str, Kind] = {
    "tasks": text("comma-separated list of task names"),
    "task_dir": DIRECTORY,
    "baseline": BASELINE,
    "limit": number(int, AT_LEAST_1),
    "batch_size": number(int, AT_LEAST_1),
    "export_dir": OUTPUT_DIR,
    "tracking.uri": text("MLflow tracking URI"),
    "offline": choice(("true", "false")),
}
USAGE = "usage: python -m bitcpm.eval RUN_OR_EXPORT tasks=a,b [task_dir=DIR] [baseline=RUN|auto]"


def parse(argv: list[str]) -> tuple[str, dict[str, str]]:
    """(target, key=value options), every value checked by its kind; ValueError (one line) on anything else."""
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
        raise ValueError(USAGE)
    if not options.get("tasks"):
        raise ValueError("tasks: required (comma-separated task names)")
    for key, value in options.items():
        try:
            KEYS[key].check(value)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    try:
        TARGET.check(target)
    except ValueError as exc:
        raise ValueError(f"RUN_OR_EXPORT: {exc}") from None
    return target, options


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bitcpm.eval` and `bitcpm-eval`."""
    try:
        target, options = parse(sys.argv[1:] if argv is None else argv)
        from bitcpm.evaluation.evaluate import evaluate

        return evaluate(target, options)
    except ValueError as exc:  # config, task and source errors are one line
        return fail("bitcpm.eval", exc)


if __name__ == "__main__":
    sys.exit(main())
