"""`python -m bitcpm.bench` end to end on CPU at smoke size: both variants timed, table printed, MLflow parent
with two children whose BF16 child a QAT training run of the same configuration finds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.bench import cli as bench

pytestmark = [pytest.mark.quick, pytest.mark.filterwarnings("ignore::UserWarning")]

TINY = [
    "experiment=smoke",
    "model.num_layers=2",
    "train.seq_length=32",
    "parallel.micro_batch_size=2",
    "parallel.global_batch_size=4",
    "bench.warmup_steps=1",
    "bench.timed_steps=1",
]


def test_bad_overrides_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["quant=none"]) == 2
    assert bench.main(["bench.repeats=0"]) == 2
    assert bench.main(["-m", "bench.repeats=1,2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("bitcpm bench: error: quant=none")
    assert err[1] == "bitcpm bench: error: bench.repeats=0: expected a value >= 1"
    assert len(err) == 3


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """One intra-op thread (the CPU backend reads OMP_NUM_THREADS): tiny steps, and no spinning on a busy box."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)


def test_bench_prints_table_and_records_parent_with_children(tmp_path: Path, capsys, one_thread) -> None:
    from mlflow.tracking import MlflowClient

    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.training.qat_overhead import bench_key, find_bf16_bench

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [*TINY, "bench.repeats=1", "tracking=mlflow", f"tracking.uri={uri}", "tracking.experiment=b"]
    assert bench.main(overrides) == 0
    out = capsys.readouterr().out
    assert "bf16 (quant=none)" in out and "qat (ternary_g128, eager, cached)" in out  # auto -> eager on CPU
    assert "QAT overhead:" in out and "n/a (peak memory is a process-wide" in out
    assert "QAT overhead by process CPU time:" in out
    assert out.count("repeat 0") == 2

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("b")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert "qat_overhead" in parent.data.metrics and "memory_overhead" not in parent.data.metrics  # CPU
    assert "qat_overhead_cpu_time" in parent.data.metrics
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    by_variant = {c.data.tags["bitcpm.bench_variant"]: c for c in children}
    assert set(by_variant) == {"bf16", "qat"}
    assert by_variant["bf16"].data.params["quant.method"] == "none"
    assert by_variant["qat"].data.params["quant.method"] == "ternary"
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"tokens_per_s", "tokens_per_s_per_device", "tflops_per_device", "peak_memory_gb"} <= set(
            child.data.metrics
        )
        assert "mfu" not in child.data.metrics  # hardware=cpu: peak unknown, so no MFU
    bf16 = by_variant["bf16"].data.metrics["tokens_per_s_per_device"]
    parent_qat = parent.data.metrics["qat_overhead"]
    qat = by_variant["qat"].data.metrics["tokens_per_s_per_device"]
    assert parent_qat == pytest.approx(1 - qat / bf16)

    # A QAT training run of the same configuration (another stage, lr, length) finds the BF16 child.
    training = compose_job(CommandLine(), [*TINY, "train.steps=50", "optim.lr=0.003"])
    key = bench_key(training, 1, "cpu")
    assert by_variant["bf16"].data.tags["bitcpm.bench_key"] == key
    assert find_bf16_bench(client, "b", key) == bf16
