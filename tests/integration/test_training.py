"""End-to-end training on CPU: loss goes down, TP=2 equals TP=1, MLflow holds the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.training.metrics_log import metric_series
from tests.conftest import only_run_dir, run_module, run_train

pytestmark = pytest.mark.integration

SHORT = ["experiment=smoke", "train.steps=12", "train.eval_interval=6", "tracking.log_interval=1"]


def _losses(cwd: Path) -> dict[int, float]:
    return metric_series(only_run_dir(cwd) / "metrics.jsonl", "loss")


def test_short_run_decreases_loss(tmp_path: Path, data_cache: Path) -> None:
    # A brand-new interpreter, imports and all, as a new user's first command (the other runs fork warm).
    proc = run_train([*SHORT, "train.seq_length=128"], tmp_path, data_cache, fresh=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    val = metric_series(run_dir / "metrics.jsonl", "val_loss")
    assert val[12] < val[0] - 1.0, val
    losses = _losses(tmp_path)
    assert sum(list(losses.values())[-3:]) / 3 < sum(list(losses.values())[:3]) / 3
    assert "validation loss" in proc.stdout and "unigram entropy" in proc.stdout
    assert (run_dir / "checkpoints" / "step_00000012" / "COMPLETE").exists()


@pytest.mark.parametrize("quant", ["ternary_g64", "ternary_channel", "none"])
def test_tp2_matches_tp1(tmp_path: Path, data_cache: Path, quant: str) -> None:
    args = [*SHORT, "train.steps=4", f"quant={quant}"]
    one, two = tmp_path / "tp1", tmp_path / "tp2"
    one.mkdir(), two.mkdir()
    p1 = run_train([*args, "parallel=single"], one, data_cache)
    assert p1.returncode == 0, p1.stderr[-3000:]
    p2 = run_train([*args, "parallel=tp2"], two, data_cache)
    assert p2.returncode == 0, p2.stderr[-3000:]
    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3, 4]
    for step in l1:
        assert l2[step] == pytest.approx(l1[step], rel=1e-4, abs=1e-4), (step, l1, l2)


def test_mlflow_run_has_params_metrics_artifacts(tmp_path: Path, data_cache: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_train(
        [
            *SHORT,
            "train.steps=3",
            "tracking=mlflow",
            f"tracking.uri={uri}",
            "tracking.experiment=t",
            "+tracking.tags.note=${oc.env:BITCPM_TEST_SECRET_TOKEN}",
        ],
        tmp_path,
        data_cache,
        env={"BITCPM_TEST_SECRET_TOKEN": "hunter2-very-secret"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("t")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden_size"] == "256"
    assert run.data.params["quant.method"] == "ternary"
    for key in (
        "loss",
        "val_loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "tokens_per_s_per_device",
        "tflops_per_device",
        "step_time_s",
    ):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
    assert run.data.tags["stage"] == "pretrain"
    assert "bitcpm.git.commit" in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml"} <= artifacts
    config_text = (Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))).read_text()
    assert "hidden_size: 256" in config_text
    everything = str(run.data.params) + str(run.data.tags) + config_text
    assert "hunter2-very-secret" not in everything


def test_mixture_of_user_jsonl_sources_with_a_tokenizer_directory(tmp_path: Path, data_cache: Path) -> None:
    import json
    import shutil

    from bitcpm.data.tokenizer import BUILTIN_TOKENIZER_DIR

    tok_dir = tmp_path / "my_tokenizer"
    shutil.copytree(BUILTIN_TOKENIZER_DIR, tok_dir)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    for name, offset in (("a", 0), ("b", 4)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for i in range(300):
                text = " ".join(words[(offset + i + j) % len(words)] for j in range(60))
                f.write(json.dumps({"body": f"Document {i}. {text}."}) + "\n")
    sources = (
        f"[{{name: a, inputs: [{tmp_path}/a.jsonl], weight: 3}}, {{name: b, inputs: [{tmp_path}/b.jsonl], weight: 1}}]"
    )
    proc = run_train(
        [*SHORT, "train.steps=6", f"data.sources={sources}", f"data.tokenizer={tok_dir}", "data.text_key=body"],
        tmp_path,
        data_cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unigram entropy of 'a'" in proc.stdout and "unigram entropy of 'b'" in proc.stdout
    val = metric_series(only_run_dir(tmp_path) / "metrics.jsonl", "val_loss")
    assert val[6] < val[0]


def test_missing_input_file_is_a_one_line_error(tmp_path: Path, data_cache: Path) -> None:
    proc = run_train([*SHORT, f"data.sources=[{{name: x, inputs: [{tmp_path}/nope.jsonl]}}]"], tmp_path, data_cache)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("bitcpm: error:")]
    assert len(errors) == 1 and "nope.jsonl" in errors[0]
    assert "Traceback" not in proc.stderr


def test_qat_run_reports_overhead_against_a_matching_bf16_bench(tmp_path: Path, data_cache: Path) -> None:

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = [*SHORT, "train.steps=3", "tracking=mlflow", f"tracking.uri={uri}", "tracking.experiment=ovh"]
    bench_args = [
        *common,
        "bench.warmup_steps=1",
        "bench.timed_steps=2",
        "bench.repeats=1",
        f"data.cache_dir={data_cache}",
    ]
    bench = run_module("bitcpm.bench", bench_args, tmp_path)
    assert bench.returncode == 0, bench.stderr[-3000:]
    proc = run_train(common, tmp_path, data_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ovh").experiment_id])
    (training,) = [r for r in runs if "run_dir" in r.data.tags]
    history = client.get_metric_history(training.info.run_id, "qat_overhead")
    assert [m.step for m in history] == [1, 2, 3]
    assert all(-5.0 < m.value < 1.0 for m in history)
