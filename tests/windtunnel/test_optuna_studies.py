"""Optuna studies (`-m hydra/sweeper=optuna`) through bitcpm's Launcher: a killed study resumes without re-running
finished trials; a 2 x 2 study against a real MLflow server is one parent run with four children, and the wind
tunnel's report / transfer read it back; a poor trial is pruned from the validation losses it reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

SHAPE = ["quant=none", "model.num_layers=2", "train.seq_length=32", "train.eval_batches=1", "optim.warmup_steps=1"]
TINY = [*SHAPE, "train.steps=8", "train.eval_interval=2"]


OPTUNA = ["-m", "hydra/sweeper=optuna"]


def windtunnel(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bitcpm.windtunnel", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)


def train(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bitcpm.train", *OPTUNA, *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def study_trials(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials()


def study_exists(db: Path, name: str) -> bool:
    """Whether the driver has created the study, read without writing: opening the database through optuna
    while the driver creates its schema races it for the schema's version row."""
    import sqlite3

    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone() is not None
    except sqlite3.OperationalError:  # no studies table yet, or the schema is being written
        return False


def test_killed_study_resumes_without_rerunning_finished_trials(tmp_path: Path, data_cache: Path) -> None:
    from optuna.trial import TrialState

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["hydra.sweeper.study_name=resume", "hydra.sweeper.sampler=grid", "hydra.sweeper.prune=false"]
    args += ["optim.lr=5e-3,1e-2,2e-2", f"hydra.sweeper.storage={storage}", *TINY, "tracking=none"]
    args += [f"train.output_root={tmp_path}/out", f"data.cache_dir={data_cache}"]
    first = train(args, tmp_path, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill it once one trial is complete and the next one is training
        time.sleep(1)
        if first.poll() is not None:
            pytest.fail("the driver ended before it could be killed:\n" + first.stdout.read())
        if not study_exists(tmp_path / "optuna.db", "resume"):
            continue
        states = [t.state for t in study_trials(storage, "resume")]
        if states.count(TrialState.COMPLETE) >= 1 and TrialState.RUNNING in states:
            break
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its trial, as a lost terminal would
    first.wait()
    before = study_trials(storage, "resume")
    complete = {t.number: t for t in before if t.state == TrialState.COMPLETE}
    assert complete and len(complete) < 3
    run_dirs = sorted(d for d in (tmp_path / "out").iterdir() if d.name != "multirun")
    metrics_before = {d: (d / "metrics.jsonl").read_text() for d in run_dirs if (d / "metrics.jsonl").exists()}

    out = finish(train(args, tmp_path))
    assert f"{len(complete)} of 3 trials already finished" in out, out
    assert f"launched {3 - len(complete)} trial(s) this time; 3 complete in the study" in out, out
    after = study_trials(storage, "resume")
    done = [t for t in after if t.state == TrialState.COMPLETE]
    assert sorted(t.params["optim.lr"] for t in done) == [5e-3, 1e-2, 2e-2]
    # The finished trials were not trained again: their metrics files are byte-identical.
    finished_lrs = {t.params["optim.lr"] for t in complete.values()}
    for t in done:
        if t.params["optim.lr"] in finished_lrs:
            assert t.number in complete
    changed = [d for d, text in metrics_before.items() if (d / "metrics.jsonl").read_text() != text]
    assert len(changed) <= 1  # only the trial that was interrupted went on
    assert len([d for d in (tmp_path / "out").iterdir() if d.name != "multirun"]) == 3


def test_grid_study_on_a_real_mlflow_server_then_report_and_transfer(tmp_path: Path, data_cache: Path) -> None:
    from mlflow.tracking import MlflowClient

    from bitcpm.frontend.compose import CommandLine, compose_job
    from tests.support.mlflow_server import start_local_server

    with start_local_server(f"sqlite:///{tmp_path / 'server.db'}") as server:
        common = [f"tracking.uri={server.uri}", "tracking.experiment=wt"]
        # The shipped lr x width study (its derived head count and FFN width) narrowed to a 2 x 2 grid, all four
        # trials in one batch, two at a time.
        args = ["sweep=lr_width", "hydra.sweeper.study_name=grid2x2", "hydra.sweeper.sampler=grid"]
        args += ["hydra.sweeper.n_jobs=4", "launcher.max_parallel=2", "hydra.sweeper.prune=false"]
        args += ["optim.lr=1e-2,3e-2", "model.hidden_size=64,128", "train.seed=0", *TINY, *common]
        args += [f"train.output_root={tmp_path}/out", f"data.cache_dir={data_cache}"]
        out = finish(train(args, tmp_path))
        assert "4 complete in the study" in out, out

        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name("wt")
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1 and parents[0].data.tags["bitcpm.study"] == "grid2x2"
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        assert len(kids) == 4
        assert {(r.data.params["optim.lr"], r.data.params["model.hidden_size"]) for r in kids} == {
            ("0.01", "64"),
            ("0.01", "128"),
            ("0.03", "64"),
            ("0.03", "128"),
        }

        report = finish(windtunnel(["report", "grid2x2", "--out", str(tmp_path / "rep"), *common], tmp_path))
        assert "| mup | 64 |" in report and "| mup | 128 |" in report, report
        artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
        assert artifacts == {"report/grid2x2_lr_width.png", "report/grid2x2_report.md"}
        best = min(kids, key=lambda r: r.data.metrics["final_val_loss"])
        best_lr = float(best.data.params["optim.lr"])
        width_row = next(
            line
            for line in report.splitlines()
            if line.startswith(f"| mup | {best.data.params['model.hidden_size']} |")
        )
        assert f"| {best_lr:.3g} (grid edge) |" in width_row  # two lrs: the best is always at an edge

        conf = tmp_path / "myconf"
        transfer = ["transfer", "grid2x2", "--target", "8b", "--name", "from_tunnel", "--config-dir", str(conf)]
        out = finish(windtunnel([*transfer, *common], tmp_path))
        assert (conf / "experiment" / "from_tunnel.yaml").exists(), out
        job = compose_job(CommandLine(config_dirs=[str(conf)]), ["experiment=from_tunnel"])
        assert job.model.name == "8b" and job.optim.lr == pytest.approx(best_lr)
        assert job.model.dim_model_base == 32  # the tunnel's base width, so hidden lr = lr / (4096 / 32)
        assert "model.dim_model_base" in out and "(changed)" in out
        again = finish(windtunnel([*transfer, *common], tmp_path))
        assert "exists (pass --force to overwrite)" in again


def test_a_poor_trial_is_pruned_from_its_validation_losses(tmp_path: Path, data_cache: Path) -> None:
    """Three batches of one trial each (n_jobs=1): still one MLflow parent run with three children."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from bitcpm.training.metrics_log import read_metrics

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    steps = 30
    # Two good trials set the median; the third (lr 1e-7: it barely moves) is worse at its first evaluation.
    args = ["hydra.sweeper.study_name=prune", "hydra.sweeper.sampler=grid", "optim.lr=1e-2,2e-2,1e-7"]
    args += [f"hydra.sweeper.storage={storage}", *SHAPE, f"train.steps={steps}", "train.eval_interval=2"]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args += [f"tracking.uri={store}", "tracking.experiment=prune", f"train.output_root={tmp_path}/out"]
    args += [f"data.cache_dir={data_cache}"]
    out = finish(train(args, tmp_path))
    states = {t.params["optim.lr"]: t.state for t in study_trials(storage, "prune")}
    assert states == {1e-2: TrialState.COMPLETE, 2e-2: TrialState.COMPLETE, 1e-7: TrialState.PRUNED}, out
    assert "optuna study prune: trial 2 PRUNED" in out  # SIGTERM: the worker saved and exited 75
    runs = [d for d in (tmp_path / "out").iterdir() if d.name != "multirun"]
    lr_of = {d: yaml.safe_load((d / "config.yaml").read_text())["optim"]["lr"] for d in runs}
    pruned = next(d for d, lr in lr_of.items() if lr == pytest.approx(1e-7))
    last = max(r["step"] for r in read_metrics(pruned / "metrics.jsonl"))
    assert last < steps
    assert any((pruned / "checkpoints").iterdir())
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("prune").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["bitcpm.study"] == "prune"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["bitcpm.trial"] for r in kids) == ["1", "2", "3"]
    assert parents[0].data.tags["best.optim.lr"] in ("0.01", "0.02")  # the sweeper's best values on the parent
    statuses = {r.data.params["optim.lr"]: r.data.tags.get("bitcpm.trial_status") for r in kids}
    assert statuses["1e-07"] == "pruned", statuses
