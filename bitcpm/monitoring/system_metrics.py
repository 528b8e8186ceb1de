"""Accelerator system metrics of every rank (memory, utilisation), gathered to rank 0 for MLflow.

Metric names carry the global rank: `system/gpu{rank}/memory_gb` (allocated by torch),
`system/gpu{rank}/memory_reserved_gb` (held by the caching allocator), `system/gpu{rank}/memory_peak_gb`,
`system/gpu{rank}/utilization` (percent, NVML through torch.cuda.utilization, else `nvidia-smi`). Each rank's
node, host and local rank go into tags `system/gpu{rank}/node`, `.../host`, `.../local_rank` once per run.
NPU ranks report memory under `system/npu{rank}/...` (no utilisation source is wired for them).

On a CPU-only run there is nothing to sample: the monitor is disabled, logs one note, and its collective
calls return immediately on every rank (all ranks share one device type, so none waits for another).
Everything is lazy: torch, NVML and nvidia-smi are touched only when a sample is taken.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)
_GB = 1e9


class DeviceProbe(Protocol):
    """Reads one accelerator's counters."""

    def memory_gb(self) -> dict[str, float]:
        """Memory figures in GB, keyed by metric suffix (memory_gb, memory_reserved_gb, memory_peak_gb)."""
        ...

    def utilization(self) -> float | None:
        """Busy percentage over the driver's last sample window, or None when no source answers."""
        ...


def node_index(rank: int, local_world_size: int | None = None) -> int:
    """This process's node: the scheduler's or torchrun's node rank, else rank // processes per node."""
    for var in ("SLURM_NODEID", "GROUP_RANK", "NODE_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    per_node = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0)
    return rank // per_node if per_node > 0 else 0


def parse_nvidia_smi_utilization(text: str) -> float | None:
    """First number of `nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits` output."""
    for line in text.splitlines():
        line = line.strip()
        if line.replace(".", "", 1).isdigit():
            return float(line)
    return None


class TorchDeviceProbe:
    """torch.cuda / torch.npu memory counters; GPU utilisation from NVML, falling back to nvidia-smi."""

    def __init__(self, device: str, local_index: int) -> None:
        import torch

        self.device, self.index = device, local_index
        self.module = getattr(torch, device)
        self._util_source: str | None = "nvml" if device == "cuda" else None

    def memory_gb(self) -> dict[str, float]:
        """Allocated, reserved and peak-allocated memory of this process on its device."""
        m = self.module
        return {
            "memory_gb": m.memory_allocated(self.index) / _GB,
            "memory_reserved_gb": m.memory_reserved(self.index) / _GB,
            "memory_peak_gb": m.max_memory_allocated(self.index) / _GB,
        }

    def _physical_index(self) -> str:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return ids[self.index] if self.index < len(ids) else str(self.index)

    def utilization(self) -> float | None:
        """NVML first (cheap); nvidia-smi once NVML is missing; nothing once both failed."""
        if self._util_source == "nvml":
            try:
                return float(self.module.utilization(self.index))
            except Exception:  # pynvml missing or NVML not initialisable
                self._util_source = "nvidia-smi"
        if self._util_source == "nvidia-smi":
            try:
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                        "-i",
                        self._physical_index(),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                ).stdout
                value = parse_nvidia_smi_utilization(out)
                if value is not None:
                    return value
            except (OSError, subprocess.SubprocessError):
                pass
            log.info("system metrics: no GPU utilisation source (pynvml or nvidia-smi); reporting memory only")
            self._util_source = None
        return None


@dataclass(frozen=True)
class RankPlace:
    """Where a rank runs."""

    rank: int
    local_rank: int
    node: int
    host: str


class SystemMonitor:
    """Samples this rank's accelerator; `collect` and `collect_tags` gather every rank's values to all ranks."""

    def __init__(self, device: str, place: RankPlace, probe: DeviceProbe | None) -> None:
        self.device, self.place, self.probe = device, place, probe
        self.prefix = f"system/{'npu' if device == 'npu' else 'gpu'}{place.rank}/"
        if probe is None:
            log.info("system metrics: hardware.device=%s has no accelerator counters; skipped", device)

    @classmethod
    def for_rank(cls, device: str, rank: int, local_rank: int, local_world_size: int | None = None) -> SystemMonitor:
        """A monitor for this process (disabled on CPU)."""
        place = RankPlace(rank, local_rank, node_index(rank, local_world_size), socket.gethostname())
        probe = TorchDeviceProbe(device, local_rank) if device in ("cuda", "npu") else None
        return cls(device, place, probe)

    @property
    def enabled(self) -> bool:
        """Whether there is anything to sample."""
        return self.probe is not None

    def sample(self) -> dict[str, float]:
        """This rank's metrics now (empty when disabled)."""
        if self.probe is None:
            return {}
        out = {self.prefix + k: v for k, v in self.probe.memory_gb().items()}
        util = self.probe.utilization()
        if util is not None:
            out[self.prefix + "utilization"] = util
        return out

    def rank_tags(self) -> dict[str, str]:
        """Node, host and local rank of this rank's device."""
        if self.probe is None:
            return {}
        p = self.place
        return {
            self.prefix + "node": str(p.node),
            self.prefix + "host": p.host,
            self.prefix + "local_rank": str(p.local_rank),
        }

    def collect(self) -> dict[str, float]:
        """Every rank's sample merged (a collective: call it on all ranks at the same step)."""
        return _merge_over_ranks(self.sample()) if self.enabled else {}

    def collect_tags(self) -> dict[str, str]:
        """Every rank's placement tags merged (a collective, like collect)."""
        return _merge_over_ranks(self.rank_tags()) if self.enabled else {}


def _merge_over_ranks(mine: dict) -> dict:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dict(mine)
    gathered: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    merged: dict = {}
    for part in gathered:
        merged.update(part or {})
    return merged
