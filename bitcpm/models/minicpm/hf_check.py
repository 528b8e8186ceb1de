"""Preflight of `stage.init_from=<HF checkpoint dir>`: config.json and safetensors headers against the job.

Torch-free and cheap (headers only), so the front end's preflight runs it before anything launches. Every
mismatch is one line naming the tensor or the model key, with the value the checkpoint has. The checkpoint's
geometry, muP constants (`minicpm` layout) and rope settings must be the job's: the message gives the override
to pass.
A `llama`-layout file carries no muP constants; its folded weights are unfolded with the job's.
"""

from __future__ import annotations

import math
from pathlib import Path

from bitcpm.config.model import ModelConfig
from bitcpm.models.minicpm.hf_checkpoint import read_config, tensor_shapes
from bitcpm.models.minicpm.hf_config import hf_key, layout_of, model_fields, model_value, override_key
from bitcpm.models.minicpm.hf_layout import hf_shapes

KEY = "stage.init_from"


class HFCheckError(ValueError):
    """A checkpoint that does not fit the job (one line)."""


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def check_fields(cfg: ModelConfig, path: Path, hf: dict) -> str:
    """The layout; raises on the first model setting that differs from config.json."""
    try:
        layout = layout_of(hf)
        fields = model_fields(hf)
    except (KeyError, TypeError, ValueError) as exc:
        raise HFCheckError(f"{KEY}={path}: config.json: {exc}") from None
    if fields["rope.type"] not in ("default", "longrope"):
        raise HFCheckError(f"{KEY}={path}: config.json rope type {fields['rope.type']!r} is not supported")
    for key, value in fields.items():
        ours = model_value(cfg, key)
        if not _same(ours, value):
            shown = value if not isinstance(value, list) else f"[{len(value)} values]"
            raise HFCheckError(
                f"{KEY}={path}: config.json has {hf_key(key)}={shown} but {override_key(key)}="
                f"{ours if not isinstance(ours, list) else f'[{len(ours)} values]'} (set {override_key(key)}={value})"
            )
    return layout


def check_hf_init(cfg: ModelConfig, path: str | Path) -> str:
    """Raise HFCheckError (one line) unless the checkpoint loads into cfg; returns its layout."""
    path = Path(path)
    try:  # a truncated or foreign config.json or weights file: one line naming the directory
        hf = read_config(path)
        shapes = tensor_shapes(path)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise HFCheckError(f"{KEY}={path}: cannot be read ({reason})") from None
    layout = check_fields(cfg, path, hf)
    file_tied = bool(hf.get("tie_word_embeddings", "lm_head.weight" not in shapes))
    if layout == "minicpm" and file_tied != cfg.tie_embeddings:
        theirs, ours = str(file_tied).lower(), str(cfg.tie_embeddings).lower()
        raise HFCheckError(
            f"{KEY}={path}: config.json has tie_word_embeddings={theirs} but model.tie_embeddings={ours} "
            f"(set model.tie_embeddings={theirs})"
        )
    if layout == "llama" and cfg.tie_embeddings and not math.isclose(cfg.scale_emb * cfg.width_mult, 1.0):
        raise HFCheckError(
            f"{KEY}={path}: a llama-layout head cannot share the embedding under muP scale_emb={cfg.scale_emb} and "
            f"m={cfg.width_mult:g} (set model.tie_embeddings=false)"
        )
    check_tensors(cfg, path, layout, with_head=not file_tied)
    return layout


def check_tensors(cfg: ModelConfig, path: Path, layout: str, with_head: bool) -> None:
    """Every tensor the model needs is there with its shape, and nothing else is."""
    shapes = tensor_shapes(path)
    expected = hf_shapes(cfg, layout, with_head=with_head)
    for name, shape in expected.items():
        if name not in shapes:
            raise HFCheckError(f"{KEY}={path}: tensor {name} is missing (expected shape {shape})")
        if shapes[name] != shape:
            raise HFCheckError(
                f"{KEY}={path}: tensor {name} has shape {shapes[name]}, the model (model.*) expects {shape}"
            )
    extra = sorted(set(shapes) - set(expected) - {"lm_head.weight"})
    extra = [n for n in extra if not n.endswith("rotary_emb.inv_freq")]
    if extra:
        raise HFCheckError(
            f"{KEY}={path}: tensor {extra[0]} has no place in the model (model.num_layers={cfg.num_layers}?)"
        )
