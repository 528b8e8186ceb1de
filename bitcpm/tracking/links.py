"""Links into MLflow's web UI that open bitcpm runs in its model-training view."""

from __future__ import annotations

# MLflow 3's UI opens in its GenAI view unless told otherwise: the experimentKind tag (set on every
# experiment bitcpm creates) is what earlier 3.x releases read; 3.17 reads this query parameter.
TRAINING_VIEW = "workflowType=machine_learning"


def training_view_url(server: str, experiment_id: str, run_id: str | None = None) -> str:
    """UI address of an experiment's runs, or of one run's metric charts, in the training view."""
    base = f"{server.rstrip('/')}/#/experiments/{experiment_id}"
    if run_id is None:
        return f"{base}?{TRAINING_VIEW}"
    return f"{base}/runs/{run_id}/model-metrics?{TRAINING_VIEW}"
