"""lm-evaluation-harness on an HF export: registry tasks (data in the local Hugging Face cache) and local
task files (a directory of YAML task configs, `task_dir=`), through the harness's own `hf` backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Metric preferred as a task's headline number (the first one a task reports).
PRIMARY_METRICS = ("acc_norm", "acc", "exact_match", "f1", "mcc", "word_perplexity")


class TaskError(ValueError):
    """A task that cannot run (one line naming it)."""


def task_manager(task_dir: str | None):
    """The harness's task index, with the user's task directory added."""
    from lm_eval.tasks import TaskManager

    if task_dir is not None and not Path(task_dir).is_dir():
        raise TaskError(f"task_dir={task_dir}: not a directory")
    return TaskManager(include_path=str(task_dir) if task_dir else None)


def check_tasks(tasks: list[str], manager) -> None:
    """Every name is a registry task, group or a task of task_dir."""
    known = set(manager.all_tasks)
    for name in tasks:
        if name not in known:
            raise TaskError(f"tasks: {name!r} is neither a registry task nor defined in task_dir")


def run_tasks(
    hf_dir: Path, tasks: list[str], task_dir: str | None, limit: int | None, batch_size: int, offline: bool
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of the harness's `hf` model (fp32, CPU unless CUDA is there) on the export."""
    if offline:  # no network: registry tasks must find their data in the local cache
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    import torch

    manager = task_manager(task_dir)
    check_tasks(tasks, manager)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args: dict[str, Any] = {"pretrained": str(hf_dir), "dtype": "float32", "device": device}
    try:
        out = lm_eval.simple_evaluate(
            model="hf", model_args=args, tasks=tasks, task_manager=manager, batch_size=batch_size, limit=limit
        )
    except Exception as exc:  # dataset downloads, malformed task files: one line naming the tasks
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskError(
            f"tasks={','.join(tasks)}: the harness failed ({type(exc).__name__}: {first}); registry tasks need "
            "their dataset in the local Hugging Face cache, otherwise pass a local task file with task_dir="
        ) from None
    return {task: _numbers(values) for task, values in out["results"].items()}


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """'acc,none' -> 'acc' (the default filter), numbers only."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or key == "sample_len":
            continue
        metric, _, filt = key.partition(",")
        out[metric if filt in ("", "none") else f"{metric}_{filt}"] = float(value)
    return out


def primary_metric(values: dict[str, float]) -> str | None:
    """The headline metric of a task's results."""
    for name in PRIMARY_METRICS:
        if name in values:
            return name
    return next((k for k in values if not k.endswith("_stderr")), None)
