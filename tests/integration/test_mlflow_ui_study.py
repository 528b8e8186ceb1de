"""MLflow's web UI, in headless Chromium, draws a study as one parent row that expands into its trials.

Needs chromium, chromedriver and selenium (`.ci/run` installs chromium); under CI=true their absence fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bitcpm.tracking.links import training_view_url
from tests.conftest import run_train
from tests.integration.test_mlflow_ui import _browser, _wait_for
from tests.support.mlflow_server import start_local_server

pytestmark = pytest.mark.integration

EXPANDER = "button[data-component-id*='runnamecellrenderer']"  # the [+] before a parent run's name


def test_a_study_is_a_parent_row_that_expands_into_its_trials(tmp_path: Path, data_cache: Path) -> None:
    browser = _browser()  # skip (or fail under CI) before spending time on training
    server = start_local_server(f"sqlite:///{tmp_path / 'ui.db'}", artifacts_dir=tmp_path / "artifacts")
    try:
        with server:
            args = ["-m", "experiment=smoke", "train.steps=4", "tracking=mlflow", f"tracking.uri={server.uri}"]
            proc = run_train([*args, "tracking.experiment=ui", "optim.lr=1e-2,5e-3"], tmp_path, data_cache)
            assert proc.returncode == 0, proc.stderr[-3000:]
            client = MlflowClient(tracking_uri=server.uri)
            experiment = client.get_experiment_by_name("ui")
            runs = client.search_runs([experiment.experiment_id])
            (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
            children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
            assert sorted(c.info.run_name for c in children) == ["optim.lr=0.005", "optim.lr=0.01"]

            def links() -> set[str]:
                anchors = browser.find_elements("css selector", "a[href*='/runs/']")
                return {a.get_attribute("href").rsplit("/runs/", 1)[-1].split("?")[0] for a in anchors}

            browser.get(training_view_url(server.uri, experiment.experiment_id))
            body = lambda: browser.find_element("tag name", "body").text  # noqa: E731
            _wait_for(browser, lambda: parent.info.run_name in body(), "the study's parent run")
            assert "3 matching runs" in body()
            assert not links() & {c.info.run_id for c in children}, "trials are folded under the study"
            browser.find_element("css selector", EXPANDER).click()
            _wait_for(browser, lambda: all(c.info.run_name in body() for c in children), "the trials")
            assert {c.info.run_id for c in children} <= links()
            browser.save_screenshot(str(tmp_path / "study.png"))
    finally:
        browser.quit()
