"""One `bitcpm.eval` invocation: resolve target (and baseline), run the harness, log, print."""

from __future__ import annotations

import shutil

from bitcpm.evaluation.harness import check_tasks, primary_metric, run_tasks, task_manager
from bitcpm.evaluation.scores import format_retention, log_results, metric_key, retention
from bitcpm.evaluation.target import Target, baseline_spec, check_sources, resolve_target


def _tracking_uri(target: Target, override: str | None) -> str | None:
    """Where the target's results go: tracking.uri=, else the training run's MLflow store (None: not tracked)."""
    from bitcpm.tracking.store_uri import resolve_store_uri

    if override:
        return resolve_store_uri(override)
    if target.job is None or target.job.tracking.backend != "mlflow":
        return None
    return resolve_store_uri(target.job.tracking.uri)


def _evaluate_one(target: Target, options: dict[str, str], tasks: list[str]) -> dict[str, dict[str, float]]:
    limit = int(options["limit"]) if "limit" in options else None
    print(f"eval: {target.label}: running {', '.join(tasks)} on {target.hf_dir}", flush=True)
    results = run_tasks(
        target.hf_dir,
        tasks,
        options.get("task_dir"),
        limit,
        int(options.get("batch_size", "8")),
        options.get("offline", "true") == "true",
    )
    for task, values in results.items():
        metric = primary_metric(values)
        shown = f"{metric} {values[metric]:.4f}" if metric else "no metric"
        print(f"eval: {target.label}: {task}: {shown}", flush=True)
    return results


def _log(target: Target, options: dict[str, str], results) -> str | None:
    uri = _tracking_uri(target, options.get("tracking.uri"))
    if uri is None:
        print(f"eval: {target.label} was not tracked (tracking=none): results are printed only")
        return None
    experiment = target.job.tracking.experiment if target.job else "bitcpm"
    run_id = log_results(uri, target.mlflow_run_id, experiment, f"eval {target.label}", results)
    print(f"eval: logged {sum(len(v) for v in results.values())} metrics to MLflow run {run_id} ({uri})")
    return run_id


def _cleanup(target: Target) -> None:
    """Remove an on-the-fly export (export_dir= keeps it)."""
    if target.temporary:
        shutil.rmtree(target.hf_dir.parent, ignore_errors=True)


def evaluate(path: str, options: dict[str, str]) -> int:
    """Evaluate `path` (and its baseline); returns the exit status."""
    tasks = [t for t in options["tasks"].split(",") if t]
    spec = baseline_spec(path, options.get("baseline"))  # baseline=auto found and checked before any export
    check_sources(path, spec)
    check_tasks(tasks, task_manager(options.get("task_dir")))
    target = resolve_target(path, options.get("export_dir"), verified=True)
    try:
        results = _evaluate_one(target, options, tasks)
    finally:
        _cleanup(target)
    run_id = _log(target, options, results)
    if spec is None:
        return 0
    base = resolve_target(spec, None, verified=True)
    try:
        base_results = _evaluate_one(base, options, tasks)
    finally:
        _cleanup(base)
    _log(base, options, base_results)
    rows = retention(base_results, results)
    print(f"eval: retention of {target.label} against {base.label} (ternary / FP):")
    print(format_retention(rows))
    uri = _tracking_uri(target, options.get("tracking.uri"))
    if run_id is not None and uri is not None:
        from bitcpm.tracking.client import log_metrics, open_client

        ratios = {metric_key(task, "retention"): ratio for task, (*_, ratio) in rows.items()}
        log_metrics(open_client(uri), run_id, ratios)
    return 0
