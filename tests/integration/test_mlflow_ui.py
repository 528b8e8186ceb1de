"""MLflow's web UI, driven by headless Chromium, shows a finished bitcpm run in its training view with a loss chart.

Needs chromium and chromedriver (`.ci/run` installs them); under CI=true their absence fails the test.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bitcpm.tracking.links import training_view_url
from tests.conftest import run_train
from tests.support.mlflow_server import start_local_server

pytestmark = pytest.mark.integration

WAIT_S = 60


def _browser():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    if not (chromium and driver and webdriver):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium, chromedriver and selenium are required under CI=true")
        pytest.skip("needs chromium, chromedriver and selenium")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1200",
    ):
        options.add_argument(arg)
    options.binary_location = chromium
    return webdriver.Chrome(options=options, service=Service(driver))


def _wait_for(browser, found, what: str):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        result = found()
        if result:
            return result
        time.sleep(0.5)
    page = browser.find_element("tag name", "body").text[:800]
    pytest.fail(f"MLflow UI: {what} did not appear within {WAIT_S} s; page text: {page}")


def test_finished_run_opens_in_the_training_view_with_its_loss_chart(tmp_path: Path, data_cache: Path) -> None:
    server = start_local_server(f"sqlite:///{tmp_path / 'ui.db'}", artifacts_dir=tmp_path / "artifacts")
    with server:
        args = ["experiment=smoke", "train.steps=4", "tracking=mlflow", f"tracking.uri={server.uri}"]
        proc = run_train([*args, "tracking.experiment=ui", "tracking.log_interval=1"], tmp_path, data_cache)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=server.uri)
        experiment = client.get_experiment_by_name("ui")
        (run,) = client.search_runs([experiment.experiment_id])
        browser = _browser()
        try:
            body = lambda: browser.find_element("tag name", "body").text  # noqa: E731
            browser.get(training_view_url(server.uri, experiment.experiment_id))
            _wait_for(browser, lambda: run.info.run_name in body(), "the run in the experiment's runs table")
            # The training view's navigation (Runs, Models), not the GenAI one (Traces, Judges, Evaluations).
            assert "Runs" in body() and "Judges" not in body() and "Evaluation runs" not in body()
            browser.get(training_view_url(server.uri, experiment.experiment_id, run.info.run_id))
            charts = _wait_for(browser, lambda: browser.find_elements("css selector", ".js-plotly-plot"), "a chart")
            assert charts
            assert "loss" in body().split() and "Judges" not in body()
        finally:
            browser.quit()
