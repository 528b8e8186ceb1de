"""Lazy access to megatron-core's indexed dataset module (keeps torch/megatron off import paths)."""

from __future__ import annotations

import warnings
from types import ModuleType


def indexed_dataset_module() -> ModuleType:
    """Import `megatron.core.datasets.indexed_dataset` on first use, muting its import-time warnings."""
    with warnings.catch_warnings():
        # megatron-core warns at import about absent Transformer Engine / Apex and its own deprecations;
        # none of it concerns data I/O.
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset
