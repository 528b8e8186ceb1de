"""Layout-independent initial weights: every tensor is drawn from a generator seeded by its global name.

megatron initialises each rank's modules in construction order from one RNG stream, so a pipeline stage or a
virtual chunk would draw different numbers than the same layer of a single-rank model. Seeding per tensor by
its name in the whole model (global layer number, not the stage-local index) gives identical weights at
every (tp, pp, virtual_pp) layout; a tensor-parallel rank draws the full tensor and keeps its shard, as
megatron's own CPU initialisation does.
"""

from __future__ import annotations

import re
import zlib

import torch

from bitcpm.config.model import ModelConfig
from bitcpm.models.minicpm.mup import hidden_init_std, output_init_std

_LAYER = re.compile(r"decoder\.layers\.(\d+)\.")


def global_names(model: torch.nn.Module) -> dict[str, str]:
    """Local parameter name -> name in the unsplit model (layer index = global layer number - 1)."""
    out = {}
    layers = list(model.decoder.layers) if hasattr(model, "decoder") else []
    tied_copy = getattr(model, "share_embeddings_and_output_weights", False) and not getattr(model, "pre_process", True)
    for name, _ in model.named_parameters():
        m = _LAYER.search(name)
        if m is not None:
            layer = layers[int(m.group(1))]
            name_g = name[: m.start(1)] + str(layer.layer_number - 1) + name[m.end(1) :]
        elif tied_copy and name == "output_layer.weight":
            name_g = "embedding.word_embeddings.weight"  # the last stage's copy of the tied embedding
        else:
            name_g = name
        out[name] = name_g
    return out


def _shard(full: torch.Tensor, param: torch.nn.Parameter, tp: int, rank: int) -> torch.Tensor:
    if not getattr(param, "tensor_model_parallel", False) or tp == 1:
        return full
    dim, stride = int(param.partition_dim), int(getattr(param, "partition_stride", 1))
    pieces = full.chunk(stride * tp, dim=dim)
    return torch.cat([pieces[j * tp + rank] for j in range(stride)], dim=dim)


@torch.no_grad()
def init_by_name(model: torch.nn.Module, cfg: ModelConfig, seed: int, tp: int, tp_rank: int) -> None:
    """Re-draw every parameter: N(0, init_std) embeddings, N(0, init_std/sqrt(m)) matrices, ones for norms.

    An untied LM head gets output_init_std (init_std); under model.parameterization=sp m is 1 throughout.
    """
    hidden_std = hidden_init_std(cfg)
    names = global_names(model)
    for name, param in model.named_parameters():
        if param.dim() < 2:
            param.fill_(1.0)  # RMSNorm weights (the model has no biases)
            continue
        full_name = names[name]
        shape = list(param.shape)
        if getattr(param, "tensor_model_parallel", False):
            shape[int(param.partition_dim)] *= tp
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(full_name.encode()))
        if "word_embeddings" in full_name:
            std = cfg.init_std
        elif full_name == "output_layer.weight":
            std = output_init_std(cfg)
        else:
            std = hidden_std
        full = torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
        param.copy_(_shard(full, param, tp, tp_rank))
