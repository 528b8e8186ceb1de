"""Training data: prepared megatron indexed datasets, blended by weight."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataSourceConfig:
    """One dataset of the mixture."""

    name: str = "builtin"
    """Label shown in logs and MLflow."""
    inputs: list[str] = field(default_factory=lambda: ["builtin"])
    """jsonl files (.gz/.xz allowed) or 'builtin' (the shipped English corpus)."""
    weight: float = 1.0
    """Relative sampling weight in the mixture."""


@dataclass
class DataConfig:
    """Data mixture, tokenizer and preparation cache."""

    sources: list[DataSourceConfig] = field(default_factory=lambda: [DataSourceConfig()])
    """Datasets of the mixture."""
    tokenizer: str = "builtin"
    """'builtin' (the shipped 8k BPE) or a tokenizer directory (tokenizer.json or tokenizer.model)."""
    text_key: str = "text"
    """JSON field holding the document text."""
    valid_fraction: float = 0.02
    """Share of documents held out for validation."""
    cache_dir: str = ".bitcpm_cache/data"
    """Where prepared datasets are stored, keyed by a hash of inputs and tokenizer."""
    seed: int = 1234
    """Seed of the held-out split and the sample order."""
