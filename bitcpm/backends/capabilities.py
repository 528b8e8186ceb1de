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


# Every backend trains through megatron's own engine (DDP, optimizer, pipeline schedules; on CPU with the
# shim in backends/cpu.py). Context parallelism needs an attention kernel that splits the sequence
# (Transformer Engine's, MindSpeed's); bitcpm's layer spec uses SDPA, so cp > 1 is refused everywhere.
CAPABILITIES: dict[str, BackendCapabilities] = {
    "cpu": BackendCapabilities(True, True, False, ("float32", "bfloat16")),
    "cuda": BackendCapabilities(True, True, False, ("float32", "bfloat16", "float16")),
    "npu": BackendCapabilities(True, True, False, ("float32", "bfloat16", "float16")),
}
