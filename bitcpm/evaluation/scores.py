"""Evaluation results into the training run's MLflow run, and the ternary / full-precision retention table."""

from __future__ import annotations

from bitcpm.evaluation.harness import primary_metric

Results = dict[str, dict[str, float]]


def metric_key(task: str, metric: str) -> str:
    """MLflow metric name of a task's metric."""
    return f"eval/{task}/{metric}"


def log_results(uri: str, run_id: str | None, experiment: str, run_name: str, results: Results) -> str:
    """Log every metric (into run_id, or a new run of `experiment` when the training run was not tracked)."""
    from bitcpm.tracking.client import create_run, finish_run, log_metrics, open_client

    client = open_client(uri)
    if run_id is None:
        run_id = create_run(client, experiment, run_name, {"bitcpm.kind": "evaluation"})
        finish_run(client, run_id)
    metrics = {metric_key(task, metric): value for task, values in results.items() for metric, value in values.items()}
    log_metrics(client, run_id, metrics)
    return run_id


def retention(fp: Results, ternary: Results) -> dict[str, tuple[str, float, float, float]]:
    """task -> (metric, fp value, ternary value, ternary / fp) for tasks both evaluated."""
    out = {}
    for task in sorted(set(fp) & set(ternary)):
        metric = primary_metric(ternary[task])
        if metric is None or metric not in fp[task]:
            continue
        a, b = fp[task][metric], ternary[task][metric]
        out[task] = (metric, a, b, b / a if a else float("nan"))
    return out


def format_retention(rows: dict[str, tuple[str, float, float, float]]) -> str:
    """The retention table (BitCPM4 reports ternary / FP per task and their average)."""
    width = max([len(t) for t in rows] + [7])
    lines = [f"{'task':<{width}}  {'metric':<10} {'FP':>8} {'ternary':>8} {'retention':>9}"]
    for task, (metric, a, b, r) in rows.items():
        lines.append(f"{task:<{width}}  {metric:<10} {a:>8.4f} {b:>8.4f} {100 * r:>8.1f}%")
    if rows:
        mean = sum(r for *_, r in rows.values()) / len(rows)
        lines.append(f"{'average':<{width}}  {'':<10} {'':>8} {'':>8} {100 * mean:>8.1f}%")
    return "\n".join(lines)
