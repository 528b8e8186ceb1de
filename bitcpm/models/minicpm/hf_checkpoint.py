"""Read a Hugging Face checkpoint directory (config.json + safetensors) into megatron model chunks at any tp/pp.

Each rank reads only the tensors its chunks hold: the full HF tensors are mapped to megatron's layout
(hf_layout.from_hf) and this rank's tensor-parallel piece is cut with the parameter's own partition_dim /
partition_stride (the fused gate/up of linear_fc1 is stride 2), as the checkpoint resharding does. Layer
indices come from each layer's global layer_number, so pipeline stages read their own layers.
The directory is checked before anything launches (hf_check.check_hf_init); the load checks shapes again.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from bitcpm.config.model import ModelConfig

CONFIG = "config.json"


def is_hf_checkpoint(path: str | Path | None) -> bool:
    """A directory with config.json and at least one .safetensors file (not a bitcpm run or checkpoint)."""
    if not path:
        return False
    p = Path(path)
    return (p / CONFIG).is_file() and any(p.glob("*.safetensors"))


def read_config(path: str | Path) -> dict[str, Any]:
    """config.json of a checkpoint directory."""
    return json.loads((Path(path) / CONFIG).read_text(encoding="utf-8"))


def safetensors_files(path: str | Path) -> list[Path]:
    """The weight files: those the index names, else every .safetensors file."""
    p = Path(path)
    index = p / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [p / n for n in names]
    return sorted(p.glob("*.safetensors"))


def header(file: Path) -> dict[str, Any]:
    """A safetensors header (tensor name -> dtype, shape, offsets) without reading the data."""
    with open(file, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(length))
    meta.pop("__metadata__", None)
    return meta


def tensor_shapes(path: str | Path) -> dict[str, list[int]]:
    """Every tensor name of a checkpoint with its shape (headers only)."""
    out: dict[str, list[int]] = {}
    for file in safetensors_files(path):
        out |= {name: list(info["shape"]) for name, info in header(file).items()}
    return out


def read_tensors(path: str | Path, names: set[str]) -> dict[str, Any]:
    """The named tensors (CPU torch tensors, as stored)."""
    from safetensors import safe_open

    out = {}
    for file in safetensors_files(path):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                if name in names:
                    out[name] = f.get_tensor(name)
    return out


_LOCAL_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


def _global_names(chunk: Any) -> dict[str, str]:
    """This chunk's parameter names -> the same names with global layer indices."""
    out = {}
    for name, _ in chunk.named_parameters():
        m = _LOCAL_LAYER.match(name)
        if m:
            layer = chunk.decoder.layers[int(m.group(1))]
            out[name] = f"decoder.layers.{layer.layer_number - 1}.{m.group(2)}"
        else:
            out[name] = name
    return out


def load_hf_weights(chunks: list[Any], path: str | Path, cfg: ModelConfig) -> list[str]:
    """Copy an HF checkpoint into this rank's megatron model chunks; returns the loaded parameter names."""
    from bitcpm.models.minicpm.hf_config import layout_of

    return load_hf_tensors(chunks, lambda names: read_tensors(path, names), cfg, layout_of(read_config(path)))


def load_hf_tensors(chunks: list[Any], read, cfg: ModelConfig, layout: str) -> list[str]:
    """Copy HF tensors (read(names) -> {name: tensor}) into this rank's megatron model chunks."""
    import torch
    from megatron.core import parallel_state

    from bitcpm.models.minicpm.hf_layout import from_hf, hf_names
    from bitcpm.models.tp_shards import split_full

    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    loaded = []
    for chunk in chunks:
        mapping = _global_names(chunk)
        wanted = {n for g in mapping.values() for n in _hf_sources(g, hf_names)}
        full = from_hf(read(wanted), cfg, layout, list(mapping.values()))
        with torch.no_grad():
            for local, param in chunk.named_parameters():
                value = full[mapping[local]].float()
                if getattr(param, "tensor_model_parallel", False):
                    dim, stride = int(param.partition_dim), int(getattr(param, "partition_stride", 1))
                    value = split_full(value, dim, stride, tp, rank)
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(
                        f"stage.init_from: {mapping[local]} has shape {list(value.shape)} on tp rank {rank}, "
                        f"the model expects {list(param.shape)}"
                    )
                param.copy_(value.to(param.dtype))
                loaded.append(local)
    return loaded


def _hf_sources(megatron_name: str, hf_names) -> tuple[str, ...]:
    if megatron_name == "output_layer.weight":
        return ("lm_head.weight", "model.embed_tokens.weight")
    return hf_names(megatron_name)
