"""CPU backend (gloo): megatron-core runs here with a small shim for its torch.cuda calls.

megatron-core 0.16 asks torch.cuda for the current device (RoPE tables, the global memory buffer) and
for RNG states (its model-parallel RNG tracker) even when every tensor lives on the CPU. The shim maps
those calls onto the CPU; nothing else in bitcpm patches megatron.
"""

from __future__ import annotations

import logging
import os

import torch


def prepare() -> None:
    """Nothing must precede megatron's import on CPU; keep torch's threads to the cores we were given."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def device(local_rank: int) -> torch.device:
    """All ranks compute on the CPU."""
    return torch.device("cpu")


def after_process_group() -> None:
    """Install the CPU shim (idempotent)."""
    import megatron.core.tensor_parallel.random as mcore_random

    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.manual_seed = lambda seed: torch.manual_seed(seed)
    mcore_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mcore_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)
    # The shimmed tracker warns on every dropout call that the CPU RNG moved inside the "GPU" context.
    logging.getLogger("megatron.core.tensor_parallel.random").setLevel(logging.ERROR)


def synchronize() -> None:
    """CPU work is synchronous."""


def peak_memory_bytes() -> int | None:
    """Peak resident set size of this process."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
