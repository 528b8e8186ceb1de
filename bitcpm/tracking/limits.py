"""MLflow per-request limits and the helpers that keep params, tags and metrics within them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

try:
    from mlflow.utils.validation import (
        MAX_BATCH_LOG_REQUEST_SIZE,
        MAX_ENTITIES_PER_BATCH,
        MAX_ENTITY_KEY_LENGTH,
        MAX_METRICS_PER_BATCH,
        MAX_PARAM_VAL_LENGTH,
        MAX_PARAMS_TAGS_PER_BATCH,
        MAX_TAG_VAL_LENGTH,
    )
except ImportError:  # pragma: no cover - constants moved in some MLflow release; these are 3.x's values
    MAX_PARAMS_TAGS_PER_BATCH = 100
    MAX_METRICS_PER_BATCH = 1000
    MAX_ENTITIES_PER_BATCH = 1000
    MAX_BATCH_LOG_REQUEST_SIZE = 1_000_000
    MAX_PARAM_VAL_LENGTH = 6000
    MAX_TAG_VAL_LENGTH = 8000
    MAX_ENTITY_KEY_LENGTH = 250

# Room for the JSON envelope (run_id, field names, timestamps) around the entities themselves.
REQUEST_BYTE_BUDGET = int(MAX_BATCH_LOG_REQUEST_SIZE * 0.9)
_PER_ENTITY_OVERHEAD = 64

T = TypeVar("T")


def truncate(value: str, limit: int) -> str:
    """Cut a value to `limit` characters, ending with a marker that says how long it was."""
    if len(value) <= limit:
        return value
    marker = f"...[truncated, {len(value)} chars]"
    return value[: limit - len(marker)] + marker


def json_size(*fields: str) -> int:
    """Approximate bytes the fields take in a REST request (JSON escapes non-ASCII as \\uXXXX)."""
    return sum(len(json.dumps(f)) for f in fields) + _PER_ENTITY_OVERHEAD


def batches(
    items: Sequence[T],
    max_count: int,
    size: Callable[[T], int],
    max_bytes: int = REQUEST_BYTE_BUDGET,
) -> Iterator[list[T]]:
    """Split items into consecutive batches of at most max_count items and about max_bytes each."""
    batch: list[T] = []
    used = 0
    for item in items:
        item_size = size(item)
        if batch and (len(batch) >= max_count or used + item_size > max_bytes):
            yield batch
            batch, used = [], 0
        batch.append(item)
        used += item_size
    if batch:
        yield batch
