"""What each device backend can run, as plain data so validation never imports torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendCapabilities:
    """Feature switches a backend supports."""

    pipeline_parallel: bool
    sequence_parallel: bool
    context_parallel: bool
    dtypes: tuple[str, ...]


# CPU: megatron-core's pipeline schedules, its optimizer and sequence parallel call CUDA directly
# (reference/feasibility.md §2), so only tp/dp over gloo are offered.
# CUDA/NPU: pipeline schedules are not wired into bitcpm's loop yet, so pp > 1 is refused there too.
CAPABILITIES: dict[str, BackendCapabilities] = {
    "cpu": BackendCapabilities(False, False, False, ("float32", "bfloat16")),
    "cuda": BackendCapabilities(False, True, False, ("float32", "bfloat16")),
    "npu": BackendCapabilities(False, True, False, ("float32", "bfloat16")),
}
