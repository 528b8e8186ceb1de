"""Training data: prepared megatron indexed datasets and existing Megatron-LM ones, blended by weight."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataSourceConfig:
    """One dataset of the mixture."""

    name: str = "builtin"
    """Label shown in logs and MLflow."""
    inputs: list[str] = field(default_factory=lambda: ["builtin"])
    """jsonl files (.gz/.xz allowed) or 'builtin' (the shipped English corpus); unused with megatron_prefix."""
    weight: float = 1.0
    """Relative sampling weight in the mixture."""
    megatron_prefix: str | None = None
    """An existing Megatron-LM dataset instead of inputs: PREFIX.bin + PREFIX.idx as Megatron-LM's
    tools/preprocess_data.py writes them, tokenized with a vocabulary that fits model.vocab_size; its last
    data.valid_fraction of documents are held out for validation."""


@dataclass
class DataConfig:
    """Data mixture, tokenizer and preparation cache."""

    sources: list[DataSourceConfig] = field(default_factory=lambda: [DataSourceConfig()])
    """Datasets of the mixture."""
    tokenizer: str = "builtin"
    """'builtin' (the shipped 8k BPE), 'builtin512' (512 tokens, for wind tunnels) or a tokenizer directory."""
    text_key: str = "text"
    """JSON field holding the document text."""
    valid_fraction: float = 0.02
    """Share of documents held out for validation."""
    cache_dir: str = ".bitcpm_cache/data"
    """Where prepared datasets are stored, keyed by a hash of inputs and tokenizer."""
    seed: int = 1234
    """Seed of the held-out split and the sample order."""
