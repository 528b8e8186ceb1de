"""Core attention over torch's scaled_dot_product_attention, for megatron-core's local layer spec.

megatron's local DotProductAttention materialises the [b, heads, s, s] score matrix, repeats K/V for
GQA and runs an unfused softmax: on an H100 at the 1B shape and 4k tokens it is the bottleneck of the
local spec (34 TFLOP/s measured, BENCHMARKS.md). torch's SDPA dispatches to FlashAttention on CUDA (bf16/fp16,
head_dim <= 256): no score matrix, GQA handled inside the kernel, O(s) activation memory. Measured on
that shape with such a module: 163 TFLOP/s. Transformer Engine is the alternative; this needs nothing
beyond torch.

Same interface and the same math as DotProductAttention (tests compare both on CPU): query
[sq, b, heads/tp, d], key/value [sk, b, groups/tp, d] in, context [sq, b, heads/tp * d] out, causal
masking, scale 1/sqrt(d) unless the config sets softmax_scale. Not supported (megatron's local
attention lacks most of them too): context parallelism, packed sequences, attention bias, sliding
windows, non-vanilla softmax types.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide

from bitcpm.models.minicpm.norm import RMSNorm


class SDPAttention(MegatronModule):
    """Drop-in core attention: megatron's DotProductAttention constructor and forward, computed by SDPA."""

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: ProcessGroupCollection | None = None,
    ) -> None:
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise NotImplementedError("SDPAttention: context parallelism needs Transformer Engine's attention")
        if config.window_size is not None or config.softmax_type != "vanilla":
            raise NotImplementedError("SDPAttention: sliding windows and softmax offsets are not supported")
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp = pg_collection.tp.size()
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.heads = divide(config.num_attention_heads, tp)
        self.groups = divide(config.num_query_groups, tp)
        self.head_dim = config.kv_channels
        # apply_query_key_layer_scaling divides the scale by the layer number and multiplies it back inside
        # megatron's fp32 softmax; the product is unchanged, so SDPA takes the plain scale.
        self.scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        """Context layer [sq, b, heads * d] of this tensor-parallel rank's heads."""
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention: packed sequences and attention bias are not supported")
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type
        # [s, b, h, d] -> [b, h, s, d]: a view; the flash kernel needs only the head dim contiguous.
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        mask = None
        causal = mask_type == AttnMaskType.causal
        if not causal and attention_mask is not None:
            mask = ~attention_mask  # megatron: True = masked out; SDPA: True = may attend
        # Causal runs ignore the explicit mask bitcpm passes (it is the causal one): an explicit mask
        # would rule out the flash kernel.
        dropout = self.dropout if self.training else 0.0
        kwargs = {"attn_mask": mask, "dropout_p": dropout, "is_causal": causal, "scale": self.scale}
        if self.heads != self.groups:
            kwargs["enable_gqa"] = True
        if dropout > 0.0 and not self.config.sequence_parallel:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                context = F.scaled_dot_product_attention(q, k, v, **kwargs)
        else:
            context = F.scaled_dot_product_attention(q, k, v, **kwargs)
        # [b, h, sq, d] -> [sq, b, h * d]
        return context.permute(2, 0, 1, 3).reshape(context.shape[2], context.shape[0], self.heads * self.head_dim)


def sdpa_layer_spec() -> ModuleSpec:
    """megatron's local GPT layer spec with SDPAttention as its core attention and bitcpm's RMSNorm.

    The norm (bitcpm.models.minicpm.norm) runs under sequence parallelism, which megatron's torch norm refuses.
    """
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    attention = spec.submodules.self_attention
    inner = dataclasses.replace(attention.submodules, core_attention=SDPAttention)
    submodules = dataclasses.replace(
        spec.submodules,
        input_layernorm=RMSNorm,
        self_attention=dataclasses.replace(attention, submodules=inner),
        pre_mlp_layernorm=RMSNorm,
    )
    return dataclasses.replace(spec, submodules=submodules)


def minicpm_layer_spec(device: str = "cpu") -> ModuleSpec:
    """The layer spec of every backend: SDPA core attention (flash on CUDA; on CPU it beats megatron's local one).

    `device` is kept for callers that name it; the spec no longer depends on it.
    """
    return sdpa_layer_spec()
