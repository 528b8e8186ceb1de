"""Parameter and FLOP counts of a MiniCPM decoder, from its config alone."""

from __future__ import annotations

from dataclasses import dataclass

from bitcpm.config.model import ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a MiniCPM decoder."""

    embedding: int
    lm_head: int
    attention_per_layer: int
    mlp_per_layer: int
    norms: int
    num_layers: int

    @property
    def layers(self) -> int:
        """Decoder-layer linear weights (attention + MLP), norms excluded."""
        return self.num_layers * (self.attention_per_layer + self.mlp_per_layer)

    @property
    def non_embedding(self) -> int:
        """Everything but the input embedding and a separate LM head."""
        return self.layers + self.norms

    @property
    def total(self) -> int:
        """All parameters (a tied LM head is counted once)."""
        return self.non_embedding + self.embedding + self.lm_head

    @property
    def matmul(self) -> int:
        """Weights that take part in a matrix multiply: the layers' linears and the LM head."""
        head = self.lm_head or self.embedding  # a tied head still multiplies by the embedding
        return self.num_layers * (self.attention_per_layer + self.mlp_per_layer) + head


def count_params(m: ModelConfig) -> ParamCounts:
    """Exact parameter counts of the megatron-core MiniCPM model (no biases, RMSNorm weights only)."""
    q = m.hidden_size * m.num_attention_heads * m.kv_channels
    kv = 2 * m.hidden_size * m.num_kv_heads * m.kv_channels
    o = m.num_attention_heads * m.kv_channels * m.hidden_size
    mlp = 3 * m.hidden_size * m.intermediate_size  # SwiGLU: gate, up, down
    embedding = m.vocab_size * m.hidden_size
    return ParamCounts(
        embedding=embedding,
        lm_head=0 if m.tie_embeddings else embedding,
        attention_per_layer=q + kv + o,
        mlp_per_layer=mlp,
        norms=(2 * m.num_layers + 1) * m.hidden_size,
        num_layers=m.num_layers,
    )


def flops_per_token(m: ModelConfig, seq_length: int) -> int:
    """Model FLOPs per trained token: 6 x matmul weights + 6 x L x s x h for causal attention."""
    counts = count_params(m)
    attention = 6 * m.num_layers * seq_length * m.num_attention_heads * m.kv_channels
    return 6 * counts.matmul + attention


def human(n: float) -> str:
    """Short human-readable count: 433.9M, 8.19B."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            digits = 2 if unit in ("B", "T") else 1
            return f"{n / scale:.{digits}f}{unit}"
    return str(int(n))
