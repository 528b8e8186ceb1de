"""Builds the MiniCPM decoder as a megatron-core GPTModel with the local (no Transformer Engine) spec."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig
from megatron.core.utils import init_method_normal

from bitcpm.config.model import ModelConfig
from bitcpm.models.minicpm.attention import minicpm_layer_spec
from bitcpm.models.minicpm.mup import apply_mup, hidden_init_std, output_init_std
from bitcpm.models.minicpm.norm import RMSNorm
from bitcpm.models.minicpm.rope import apply_longrope, attention_softmax_scale

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def transformer_config(
    cfg: ModelConfig,
    *,
    tp: int = 1,
    dtype: str = "float32",
    sequence_parallel: bool = False,
    recompute: str = "none",
    use_cpu_initialization: bool = True,
    pp: int = 1,
    virtual_pp: int = 1,
) -> TransformerConfig:
    """megatron TransformerConfig of a MiniCPM model: pre-norm RMSNorm, SwiGLU, GQA, no biases, no dropout."""
    hidden_std = hidden_init_std(cfg)
    torch_dtype = DTYPES[dtype]
    recompute_kwargs = {}
    if recompute != "none":
        recompute_kwargs = {"recompute_granularity": recompute}
        if recompute == "full":
            recompute_kwargs |= {"recompute_method": "uniform", "recompute_num_layers": 1}
    return TransformerConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.intermediate_size,
        num_attention_heads=cfg.num_attention_heads,
        num_query_groups=cfg.num_kv_heads,
        kv_channels=cfg.kv_channels,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        # muP init (MiniCPM paper Table 7): hidden matrices init_std/sqrt(m); MiniCPM scales residual
        # branches by scale_depth/sqrt(L) in the forward instead of Megatron's depth-scaled output init.
        # megatron also gives an untied LM head init_method; build_minicpm rescales it (output_init_std).
        init_method=init_method_normal(hidden_std),
        output_layer_init_method=init_method_normal(hidden_std),
        embedding_init_method=init_method_normal(cfg.init_std),
        init_method_std=hidden_std,
        # LongRoPE's cos/sin factor, as a softmax scale (None: megatron's 1/sqrt(d)).
        softmax_scale=attention_softmax_scale(cfg.rope, cfg.max_position_embeddings, cfg.kv_channels),
        embedding_init_method_std=cfg.init_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=virtual_pp if pp > 1 and virtual_pp > 1 else None,
        sequence_parallel=sequence_parallel,
        params_dtype=torch_dtype,
        pipeline_dtype=torch_dtype,
        bf16=torch_dtype == torch.bfloat16,
        fp16=torch_dtype == torch.float16,
        use_cpu_initialization=use_cpu_initialization,
        **recompute_kwargs,
    )


def build_minicpm(
    cfg: ModelConfig,
    *,
    seq_length: int,
    tp: int = 1,
    dtype: str = "float32",
    sequence_parallel: bool = False,
    recompute: str = "none",
    use_cpu_initialization: bool = True,
    device: str = "cpu",
    pp: int = 1,
    virtual_pp: int = 1,
    vp_stage: int | None = None,
    config: TransformerConfig | None = None,
) -> GPTModel:
    """A MiniCPM GPTModel for this rank's tensor-parallel shard and pipeline stage, muP hooks registered.

    With pp > 1 the model holds only this stage's layers (vp_stage picks the virtual chunk); the embedding
    lives on the first stage, the LM head on the last. `device` no longer changes the spec (SDPA everywhere).
    """
    from megatron.core import parallel_state
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    if config is None:
        config = transformer_config(
            cfg,
            tp=tp,
            dtype=dtype,
            sequence_parallel=sequence_parallel,
            recompute=recompute,
            use_cpu_initialization=use_cpu_initialization,
            pp=pp,
            virtual_pp=virtual_pp,
        )
    staged = config.pipeline_model_parallel_size > 1
    pre = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage) if staged else True
    post = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage) if staged else True
    layers = get_num_layers_to_build(config, vp_stage=vp_stage) if staged else config.num_layers
    # A block spec of our own: megatron's default final norm for a layer spec is its torch norm (no SP).
    block = TransformerBlockSubmodules(layer_specs=[minicpm_layer_spec(device)] * layers, layer_norm=RMSNorm)
    model = GPTModel(
        config=config,
        transformer_layer_spec=block,
        vocab_size=cfg.vocab_size,
        max_sequence_length=cfg.max_position_embeddings,
        pre_process=pre,
        post_process=post,
        share_embeddings_and_output_weights=cfg.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=int(cfg.rope.theta),
        parallel_output=True,
        vp_stage=vp_stage,
    )
    if cfg.rope.type == "longrope":
        apply_longrope(model.rotary_pos_emb, cfg.rope, cfg.max_position_embeddings, seq_length)
    if post and not cfg.tie_embeddings and model.output_layer.weight is not None:
        # Rescaling megatron's draw keeps the head identical across tp sizes (no second random draw).
        with torch.no_grad():
            model.output_layer.weight.mul_(output_init_std(cfg) / hidden_init_std(cfg))
    apply_mup(model, cfg)
    return model
