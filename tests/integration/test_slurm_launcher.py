"""launcher=slurm on a real Slurm (launchers/slurm_local/up.sh --accounting; .ci/run starts it).

Each test submits from its own temporary directory, so every submission gets a fresh submitit folder (job ids
restart at 1 when Slurm's state is wiped, and a folder keyed by job id would mix old and new jobs). Job states
are read from accounting (sacct): a failed job must read FAILED, not COMPLETED or UNKNOWN.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from launchers.slurm_state import query_states, read_records
from tests.conftest import REPO, run_train

pytestmark = pytest.mark.integration
SLURM_UP = "bash launchers/slurm_local/up.sh --accounting"


def _slurm_problem() -> str | None:
    """Why Slurm cannot run these tests here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return f"Slurm is not installed (start it: {SLURM_UP})"
    info = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return f"sinfo failed ({info.stderr.strip()}); start Slurm: {SLURM_UP}"
    if not {"idle", "mixed"} & set(info.stdout.split()):
        return f"no idle Slurm node (sinfo: {info.stdout.split()}); {SLURM_UP}"
    acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True, timeout=30)
    if acct.returncode != 0 or "disabled" in acct.stderr:
        return f"Slurm accounting is off (sacct: {acct.stderr.strip()}); {SLURM_UP}"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    """Skip with the reason when Slurm is not up; under CI=true that is a failure, never a skip."""
    problem = _slurm_problem()
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but Slurm is not usable: {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def warm_cache(data_cache: Path) -> Path:
    """Prepare the corpus once up front: concurrent array members must not race to prepare the same cache."""
    from bitcpm.config.data import DataConfig
    from bitcpm.data.prepare import dataset_cache_dir, prepare_dataset

    cfg = DataConfig()
    src = cfg.sources[0]
    target = dataset_cache_dir(data_cache, src.inputs, cfg.tokenizer, cfg.valid_fraction, cfg.text_key)
    prepare_dataset(src.inputs, cfg.tokenizer, target, cfg.valid_fraction, cfg.text_key, seed=cfg.seed)
    return data_cache


def _slurm_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["launcher=slurm", "launcher.cpus_per_task=1", "experiment=smoke", *extra]


def _mlflow(tmp_path: Path) -> tuple[str, list[str]]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return uri, ["tracking=mlflow", f"tracking.uri={uri}"]


def _runs(uri: str):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bitcpm")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def _explain(proc: subprocess.CompletedProcess, *logs: Path) -> str:
    tails = [proc.stdout[-2500:], proc.stderr[-2500:]]
    tails += [f"--- {log}\n{log.read_text()[-3000:]}" for log in logs if log.exists()]
    return "\n".join(tails)


def test_tp2_job_trains_and_logs_to_mlflow(slurm, tmp_path: Path, warm_cache: Path):
    uri, tracking = _mlflow(tmp_path)
    args = _slurm_args(tmp_path, "parallel=tp2", *tracking, "launcher.time_min=10")
    proc = run_train(args, tmp_path, warm_cache, timeout=400)
    run_dirs = list((tmp_path / "out").iterdir())
    assert len(run_dirs) == 1, _explain(proc)
    (record,) = read_records(run_dirs[0] / "launch")
    log = Path(record.log)
    assert proc.returncode == 0, _explain(proc, log)
    assert query_states([record.job_id])[record.job_id].state == "COMPLETED"
    assert "rank 0/2" in log.read_text() and "rank 1/2" in log.with_name(log.name.replace("_0_", "_1_")).read_text()
    client, runs = _runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    losses = client.get_metric_history(runs[0].info.run_id, "loss")
    assert [m.step for m in losses][-1] == 6 and all(m.value > 0 for m in losses)
    status = subprocess.run(
        [sys.executable, "-m", "launchers.status", str(run_dirs[0])], cwd=REPO, capture_output=True, text=True
    )
    assert status.returncode == 0 and re.search(rf"^{record.job_id}\s+COMPLETED\s", status.stdout, flags=re.M)


def _old_format_run_dir(overrides: list[str], tmp_path: Path, data_cache: Path) -> Path:
    """Give one member a run directory holding a checkpoint in the pre-dist_checkpointing format.

    Preflight cannot see it (it reads the job's inputs, not its own run directory): the worker finds it on
    the node and stops with exit 2 and the conversion command, so only that array element fails.
    """
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.frontend.rundir import run_dir_for

    job = compose_job(CommandLine(), [*overrides, f"data.cache_dir={data_cache}", f"train.output_root={tmp_path}/out"])
    step = run_dir_for(job) / "checkpoints" / "step_00000002"
    step.mkdir(parents=True)
    (step / "shard_tp00_pp00.pt").write_text("written by an older bitcpm")
    (step / "COMPLETE").write_text("2\n")
    return run_dir_for(job)


def test_multirun_array_reports_the_failed_member(slurm, tmp_path: Path, warm_cache: Path):
    fixed = _slurm_args(tmp_path, "launcher.time_min=10")
    broken = _old_format_run_dir([*fixed, "train.seed=3"], tmp_path, warm_cache)
    proc = run_train(["-m", *fixed, "train.seed=1,2,3"], tmp_path, warm_cache, timeout=400)
    run_dirs = sorted((tmp_path / "out").iterdir())
    records = {d: read_records(d / "launch")[-1] for d in run_dirs if (d / "launch").exists()}
    assert len(records) == 3, _explain(proc)
    bases = {r.job_id.split("_")[0] for r in records.values()}
    assert len(bases) == 1, f"one array expected, got jobs {[r.job_id for r in records.values()]}"
    states = query_states([r.job_id for r in records.values()])
    outcome = {
        ("missing" if run_dir == broken else run_dir.name): states[rec.job_id] for run_dir, rec in records.items()
    }
    assert outcome["missing"].state == "FAILED" and outcome["missing"].exit_code == "2:0", _explain(proc)
    assert [s.state for k, s in outcome.items() if k != "missing"] == ["COMPLETED", "COMPLETED"], _explain(proc)
    assert proc.returncode == 1  # waiting for the array reports its failure
    status = subprocess.run(
        [sys.executable, "-m", "launchers.status", "--all", "--root", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 1
    assert status.stdout.count("COMPLETED") == 2 and status.stdout.count("FAILED") == 1


def _wait(predicate, timeout: float, what: str, poll: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.timeout(600)  # waits out a real 1-minute Slurm limit, then the requeued attempt
def test_time_limit_checkpoints_requeues_and_resumes(slurm, tmp_path: Path, warm_cache: Path):
    # --time=1 with USR2 10 s ahead: Slurm's 30 s timer sends the warning 20-50 s into the job, mid-training
    # (400 steps outlast it even on a fast machine); the worker saves and exits 75 and the job requeues itself.
    uri, tracking = _mlflow(tmp_path)
    steps = 400
    args = _slurm_args(
        tmp_path,
        "parallel=tp2",
        *tracking,
        "launcher.time_min=1",
        "launcher.signal_delay_s=10",
        "launcher.max_restarts=3",
        "launcher.wait=false",
        f"train.steps={steps}",
        "train.eval_interval=0",
    )
    proc = run_train(args, tmp_path, warm_cache, timeout=120)
    assert proc.returncode == 0, _explain(proc)
    (run_dir,) = list((tmp_path / "out").iterdir())
    (record,) = read_records(run_dir / "launch")
    job, log = record.job_id, Path(record.log)
    restarts_file = run_dir / "launch" / "restarts.json"

    def requeued_and_pending():
        if not restarts_file.exists():
            return None
        queued = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
        return queued.strip() == "PENDING"

    _wait(requeued_and_pending, 240, "the time-limit warning and the requeue")
    # Slurm keeps a job's limit across requeues; give the next attempt room to finish whatever this machine's
    # speed, so the test does not depend on how many steps fit in a minute.
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)
    final = _wait(lambda: (st := query_states([job])[job]).terminal and st, 600, "the requeued job to finish")
    text = log.read_text()
    assert final.state == "COMPLETED", f"{final}\n{text[-4000:]}"
    assert final.restarts >= 1  # sacct's REQUEUED attempt
    saved = int(re.search(r"SIGUSR2 received: saved step (\d+)", text).group(1))
    resumed = int(re.search(r"resumed from \S+ \(step (\d+)\)", text).group(1))
    assert 0 < saved == resumed < steps
    assert json.loads(restarts_file.read_text())["count"] >= 1
    client, runs = _runs(uri)
    assert len(runs) == 1, "the requeued attempt must continue the same MLflow run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    loss_steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert loss_steps[-1] == steps and loss_steps == sorted(loss_steps)
    val_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert resumed in val_steps  # the resumed attempt validated at its start step, not at 0 again
    assert run.data.metrics["restarts"] >= 1 and int(run.data.tags["restarts"]) >= 1


def test_dependent_jobs_start_only_after_success(slurm, tmp_path: Path):
    # Stage pipelines use submit(requests, dependencies): afterok. `python -m platform` stands in for a worker
    # that succeeds; bitcpm.worker without its argument exits 2 (a stage that fails).
    from launchers.request import LaunchRequest, SlurmOptions
    from launchers.slurm import submit

    def request(name: str, module: str) -> LaunchRequest:
        options = SlurmOptions(job_name=name, time_min=5, cpus_per_task=1, signal_delay_s=30, wait=False)
        return LaunchRequest(module, [], tmp_path / name, slurm=options)

    (first,) = submit([request("first", "platform")])
    (second,) = submit([request("second", "platform")], dependencies=[first.job_id])
    (broken,) = submit([request("broken", "bitcpm.worker")])
    (blocked,) = submit([request("blocked", "platform")], dependencies=[broken.job_id])
    jobs = [first.job_id, second.job_id, broken.job_id]
    final = _wait(lambda: (st := query_states(jobs)) and all(s.terminal for s in st.values()) and st, 180, "jobs")
    assert [final[j].state for j in jobs] == ["COMPLETED", "COMPLETED", "FAILED"]
    times = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", f"{first.job_id},{second.job_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    spans = {line.split("|")[0]: line.split("|")[1:] for line in times}
    assert spans[second.job_id][0] >= spans[first.job_id][1]  # ISO times compare as text
    reason = subprocess.run(["squeue", "-h", "-j", blocked.job_id, "-o", "%T %r"], capture_output=True, text=True)
    subprocess.run(["scancel", blocked.job_id], check=False)
    assert reason.stdout.split()[:1] == ["PENDING"] and "Dependency" in reason.stdout
    assert read_records(tmp_path / "second" / "launch")[0].dependencies == [first.job_id]


def test_pipeline_stages_are_chained_with_afterok(slurm, tmp_path: Path, warm_cache: Path):
    uri, tracking = _mlflow(tmp_path)
    args = [
        "launcher=slurm",
        "launcher.cpus_per_task=1",
        "launcher.time_min=10",
        "experiment=debug_pipeline",
        "train.seq_length=64",
        "train.steps=10",
        "optim.warmup_steps=2",
        "train.eval_interval=0",
        "train.eval_batches=2",
        "pipeline.2.overrides=['stage=distill','quant=ternary_g128','stage.init_from=@qat','stage.teacher_from=@pretrain','train.steps=4','stage.rewarmup_steps=1']",
        *tracking,
    ]
    proc = run_train(args, tmp_path, warm_cache, timeout=600)
    assert proc.returncode == 0, _explain(proc)
    records = {}
    for run_dir in (tmp_path / "out").iterdir():
        if (run_dir / "launch").exists():
            (rec,) = read_records(run_dir / "launch")
            records[run_dir.name.split("-")[1]] = rec
    assert set(records) == {"pretrain", "qat", "distill"}
    assert records["pretrain"].dependencies == []
    assert records["qat"].dependencies == [records["pretrain"].job_id]
    assert records["distill"].dependencies == [records["qat"].job_id]
    states = query_states([r.job_id for r in records.values()])
    assert {s.state for s in states.values()} == {"COMPLETED"}
    client, runs = _runs(uri)
    by_stage = {r.data.tags["stage"]: r for r in runs}
    assert set(by_stage) == {"pipeline", "pretrain", "qat", "distill"} and len(runs) == 4
    parent = by_stage.pop("pipeline").info.run_id
    assert {r.data.tags.get("mlflow.parentRunId") for r in by_stage.values()} == {parent}
