"""Bench key (config minus quant + device + world size) and the lookup of a matching BF16 bench in MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.training.qat_overhead import (
    BENCH_KEY_TAG,
    BENCH_VARIANT_TAG,
    bench_key,
    device_name,
    find_bf16_bench,
    qat_overhead,
)

pytestmark = pytest.mark.quick


def _job(*overrides: str):
    return compose_job(CommandLine(), list(overrides))


def test_key_ignores_quant_stage_optim_and_data_but_not_the_work() -> None:
    base = bench_key(_job("quant=ternary_g128"), 1, "NVIDIA H100")
    assert bench_key(_job("quant=none"), 1, "NVIDIA H100") == base
    other = _job("quant=ternary_g32", "optim.lr=0.5", "train.steps=70", "tracking=none")
    assert bench_key(other, 1, "NVIDIA H100") == base
    assert bench_key(_job("train.seq_length=128"), 1, "NVIDIA H100") != base
    assert bench_key(_job("parallel.micro_batch_size=2"), 1, "NVIDIA H100") != base
    assert bench_key(_job("model.num_layers=2"), 1, "NVIDIA H100") != base
    assert bench_key(_job(), 2, "NVIDIA H100") != base
    assert bench_key(_job(), 1, "NVIDIA H200") != base
    assert bench_key(_job(), 1) == bench_key(_job(), 1, "cpu")  # no device given: this process's device


def test_device_name_on_cpu() -> None:
    assert device_name("cpu") == "cpu"


def test_overhead_sign() -> None:
    assert qat_overhead(95.0, 100.0) == pytest.approx(0.05)
    assert qat_overhead(105.0, 100.0) == pytest.approx(-0.05)


def test_no_client_no_bench() -> None:
    from bitcpm.tracking import NullTracker

    assert find_bf16_bench(NullTracker(), "bitcpm", "abc") is None
    assert find_bf16_bench(None, "bitcpm", "abc") is None


@pytest.fixture
def client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


_CLOCK = [1_700_000_000_000]


def _run(client, exp_id: str, key: str, variant: str, tps: float, status: str = "FINISHED") -> None:
    _CLOCK[0] += 1000  # explicit start times: "newest" must not depend on the clock's resolution
    run = client.create_run(exp_id, start_time=_CLOCK[0], tags={BENCH_KEY_TAG: key, BENCH_VARIANT_TAG: variant})
    client.log_metric(run.info.run_id, "tokens_per_s_per_device", tps)
    client.set_terminated(run.info.run_id, status=status)


def test_finds_newest_finished_bf16_child_with_the_key(client) -> None:
    exp = client.create_experiment("bitcpm")
    assert find_bf16_bench(client, "missing-experiment", "k1") is None
    assert find_bf16_bench(client, "bitcpm", "k1") is None
    _run(client, exp, "k1", "bf16", 1000.0)
    _run(client, exp, "k1", "qat", 900.0)  # the QAT child never counts
    _run(client, exp, "k2", "bf16", 5.0)  # another configuration
    _run(client, exp, "k1", "bf16", 7.0, status="FAILED")  # an aborted bench
    assert find_bf16_bench(client, "bitcpm", "k1") == 1000.0
    _run(client, exp, "k1", "bf16", 1100.0)
    assert find_bf16_bench(client, "bitcpm", "k1") == 1100.0

    class TrackerLike:  # MlflowTracker exposes its client as .client
        pass

    holder = TrackerLike()
    holder.client = client  # type: ignore[attr-defined]
    assert find_bf16_bench(holder, "bitcpm", "k2") == 5.0
    assert find_bf16_bench(client.tracking_uri, "bitcpm", "k2") == 5.0  # a tracking URI works too


def test_an_unreadable_store_means_no_overhead_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def get_experiment_by_name(self, name: str):
            raise ConnectionError("tracking server unreachable")

        def search_runs(self, *args, **kwargs):
            raise AssertionError("not reached")

    assert find_bf16_bench(Broken(), "bitcpm", "k") is None
    assert "could not search MLflow" in caplog.text
