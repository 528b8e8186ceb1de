"""System metrics: names with rank ids, node/host tags, the CPU no-op with its one-time note, nvidia-smi parsing."""

from __future__ import annotations

import logging

import pytest

from bitcpm.monitoring.system_metrics import (
    RankPlace,
    SystemMonitor,
    node_index,
    parse_nvidia_smi_utilization,
)

pytestmark = pytest.mark.quick


class FakeProbe:
    def __init__(self, util: float | None) -> None:
        self.util = util

    def memory_gb(self) -> dict[str, float]:
        return {"memory_gb": 1.5, "memory_reserved_gb": 2.0, "memory_peak_gb": 1.75}

    def utilization(self) -> float | None:
        return self.util


def test_gpu_metrics_are_named_by_global_rank() -> None:
    mon = SystemMonitor("cuda", RankPlace(rank=3, local_rank=1, node=1, host="n1"), FakeProbe(87.0))
    assert mon.sample() == {
        "system/gpu3/memory_gb": 1.5,
        "system/gpu3/memory_reserved_gb": 2.0,
        "system/gpu3/memory_peak_gb": 1.75,
        "system/gpu3/utilization": 87.0,
    }
    assert mon.rank_tags() == {"system/gpu3/node": "1", "system/gpu3/host": "n1", "system/gpu3/local_rank": "1"}
    # Single process (no process group): collecting is just this rank's values.
    assert mon.collect() == mon.sample()
    assert mon.collect_tags() == mon.rank_tags()


def test_missing_utilization_is_left_out_and_npu_prefix() -> None:
    mon = SystemMonitor("npu", RankPlace(0, 0, 0, "h"), FakeProbe(None))
    assert set(mon.sample()) == {
        "system/npu0/memory_gb",
        "system/npu0/memory_reserved_gb",
        "system/npu0/memory_peak_gb",
    }


def test_cpu_is_a_silent_no_op_with_one_note(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bitcpm.monitoring.system_metrics"):
        mon = SystemMonitor.for_rank("cpu", rank=0, local_rank=0)
        assert not mon.enabled
        assert mon.sample() == {} and mon.collect() == {} and mon.collect_tags() == {}
        mon.collect()
    notes = [r for r in caplog.records if "system metrics" in r.getMessage()]
    assert len(notes) == 1 and "skipped" in notes[0].getMessage()


def test_node_index_from_scheduler_or_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_NODEID", "GROUP_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert node_index(11) == 0
    assert node_index(11, local_world_size=8) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert node_index(11) == 2
    monkeypatch.setenv("GROUP_RANK", "5")
    assert node_index(11) == 5
    monkeypatch.setenv("SLURM_NODEID", "7")
    assert node_index(11) == 7


def test_nvidia_smi_output_parsing() -> None:
    assert parse_nvidia_smi_utilization("87\n") == 87.0
    assert parse_nvidia_smi_utilization("  3 \n") == 3.0
    assert parse_nvidia_smi_utilization("[N/A]\n") is None
    assert parse_nvidia_smi_utilization("") is None


@pytest.mark.gpu
def test_real_cuda_probe() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    mon = SystemMonitor.for_rank("cuda", rank=0, local_rank=0)
    x = torch.ones(1024, 1024, device="cuda")
    sample = mon.sample()
    assert sample["system/gpu0/memory_gb"] >= x.numel() * 4 / 1e9
    assert sample["system/gpu0/memory_reserved_gb"] >= sample["system/gpu0/memory_gb"]
