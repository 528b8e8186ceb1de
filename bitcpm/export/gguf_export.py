"""`export gguf`: llama.cpp's `minicpm` architecture with TQ2_0 ternary projections.

TQ2_0 stores 256 weights as 2-bit codes plus ONE fp16 scale (the block's absmax). That holds a trained
ternary weight exactly only when every 256-block lies inside one quantization group: group size a multiple
of 256, or per-channel scales with in_features a multiple of 256. Then block absmax = the group's scale
(blocks with no non-zero trit dequantize to 0, also exact) and the file holds trits x fp16(scale). Other
group sizes are refused, or with --lossy re-ternarized per block with the error printed.

The weights are the `minicpm` layout (muP constants NOT folded): llama.cpp's MiniCPM graph multiplies the
embedding by minicpm.embedding_scale, each branch by minicpm.residual_scale and divides the final hidden
state by minicpm.logit_scale. q/k rows are permuted to ggml's rotary layout, as llama.cpp's converter does.
Embedding and head are F16 (--embed-type f32 keeps them exact), norms F32.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from bitcpm.config.root import JobConfig
from bitcpm.export.source import Source
from bitcpm.export.weights import TernaryTensor, split_to_hf, ternary_state

BLOCK = 256
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm",
    "self_attn.q_proj.weight": "attn_q",
    "self_attn.k_proj.weight": "attn_k",
    "self_attn.v_proj.weight": "attn_v",
    "self_attn.o_proj.weight": "attn_output",
    "post_attention_layernorm.weight": "ffn_norm",
    "mlp.gate_proj.weight": "ffn_gate",
    "mlp.up_proj.weight": "ffn_up",
    "mlp.down_proj.weight": "ffn_down",
}
_GLOBAL = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}


def gguf_name(hf_name: str) -> str:
    """llama.cpp tensor name of an HF (minicpm-layout) tensor."""
    if hf_name in _GLOBAL:
        return f"{_GLOBAL[hf_name]}.weight"
    _, _, index, rest = hf_name.split(".", 3)
    return f"blk.{index}.{_LAYER_TENSORS[rest]}.weight"


def check_gguf_lossless(job: JobConfig, lossy: bool) -> None:
    """ValueError (one line) when TQ2_0 cannot hold the run's ternary weights exactly and --lossy is absent."""
    q, m = job.quant, job.model
    if not q.enabled:
        raise ValueError("export gguf: the run is not ternary (quant.method=none); export hf instead")
    dims = {"hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size}
    dims["num_attention_heads x head_dim"] = m.num_attention_heads * m.kv_channels
    for label, size in dims.items():
        if size % BLOCK:
            raise ValueError(f"export gguf: {label}={size} is not a multiple of 256: TQ2_0 cannot hold these rows")
    if q.group_size == -1 or q.group_size % BLOCK == 0 or lossy:
        return
    raise ValueError(
        f"export gguf: quant.group_size={q.group_size} cannot be stored exactly in TQ2_0 (one fp16 scale per 256 "
        "weights); lossless choices: quant.group_size=256 (or a multiple of 256) or quant.group_size=-1 (per "
        "channel); pass --lossy to convert anyway with the error measured and printed"
    )


def _permute_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """HF rotate-half q/k rows -> ggml's interleaved-pair rotary rows (llama.cpp's converter permutation)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_parts(source: Source) -> tuple[dict[str, torch.Tensor], dict[str, TernaryTensor]]:
    """minicpm-layout tensors (fp32) and the trits/scales of the ternary ones under their HF names."""
    from bitcpm.export.weights import fake_quantized_state
    from bitcpm.models.minicpm.hf_layout import to_hf

    cfg = source.job.model
    dense = to_hf(fake_quantized_state(source.model), cfg, "minicpm")
    ternary: dict[str, TernaryTensor] = {}
    for name, parts in ternary_state(source.model).items():
        ternary |= split_to_hf(name, parts, cfg)
    return dense, ternary


def _rope_heads(hf_name: str, source: Source) -> int | None:
    cfg = source.job.model
    if hf_name.endswith("q_proj.weight"):
        return cfg.num_attention_heads
    if hf_name.endswith("k_proj.weight"):
        return cfg.num_kv_heads
    return None


def expected_tensors(source: Source, embed_type: str) -> dict[str, np.ndarray]:
    """What every GGUF tensor must dequantize to: trits x fp16(scale), fp16/fp32 embeddings, fp32 norms."""
    dense, ternary = _hf_parts(source)
    out = {}
    for hf_name, tensor in dense.items():
        if hf_name in ternary:
            parts = ternary[hf_name]
            scales = parts.scales.to(torch.float16).float()
            tensor = TernaryTensor(parts.trits, scales, parts.group_size).dequantize()
        elif tensor.dim() == 2 and embed_type == "f16":
            tensor = tensor.to(torch.float16).float()
        heads = _rope_heads(hf_name, source)
        out[gguf_name(hf_name)] = (_permute_rows(tensor, heads) if heads else tensor).numpy()
    return out


def _add_tokenizer(writer, spec: str) -> None:
    """gpt2-style BPE vocabulary from tokenizer.json (ids in order, special tokens as control tokens)."""
    import gguf

    from bitcpm.data.tokenizer import load_tokenizer, resolve_tokenizer_dir

    data = json.loads((resolve_tokenizer_dir(spec) / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE":
        print("export gguf: the tokenizer is not BPE; the file carries no vocabulary (pass token ids)")
        return
    vocab = dict(model["vocab"]) | {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    special = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    for text, i in vocab.items():
        tokens[i] = text
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    tok = load_tokenizer(spec)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tok.eos_id)
    if tok.bos_id is not None:
        writer.add_bos_token_id(tok.bos_id)


def write_gguf(source: Source, out: Path, lossy: bool = False, embed_type: str = "f16") -> Path:
    """Write the GGUF file (TQ2_0 projections); prints progress and, with --lossy, the conversion error."""
    import gguf

    from bitcpm.models.minicpm.hf_layout import residual_multiplier
    from bitcpm.models.minicpm.rope import longrope_mscale

    cfg = source.job.model
    dense, ternary = _hf_parts(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), arch="minicpm")
    writer.add_name(source.run_dir.name)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_key_length(cfg.kv_channels)
    writer.add_value_length(cfg.kv_channels)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_rope_dimension_count(cfg.kv_channels)
    writer.add_rope_freq_base(cfg.rope.theta)
    writer.add_embedding_scale(cfg.scale_emb)
    writer.add_residual_scale(residual_multiplier(cfg))
    writer.add_logit_scale(cfg.width_mult)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_TQ2_0)
    if cfg.rope.type == "longrope":
        writer.add_rope_scaling_orig_ctx_len(int(cfg.rope.original_max_position_embeddings))
        writer.add_rope_scaling_attn_factors(longrope_mscale(cfg.rope, cfg.max_position_embeddings))
        writer.add_tensor("rope_factors_long.weight", np.asarray(cfg.rope.long_factor, dtype=np.float32))
        writer.add_tensor("rope_factors_short.weight", np.asarray(cfg.rope.short_factor, dtype=np.float32))
    _add_tokenizer(writer, source.job.data.tokenizer)
    worst = 0.0
    for i, (hf_name, tensor) in enumerate(dense.items()):
        heads = _rope_heads(hf_name, source)
        values = (_permute_rows(tensor, heads) if heads else tensor).numpy().astype(np.float32)
        name = gguf_name(hf_name)
        if hf_name in ternary:
            packed = gguf.quants.quantize(values, gguf.GGMLQuantizationType.TQ2_0)
            writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.TQ2_0)
            if lossy:
                back = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.TQ2_0)
                worst = max(worst, float(np.linalg.norm(back - values) / max(np.linalg.norm(values), 1e-30)))
        elif values.ndim == 2 and embed_type == "f16":
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, values)
        print(f"\rexport gguf: tensor {i + 1}/{len(dense)}", end="", flush=True)
    print(flush=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if lossy:
        print(f"export gguf: --lossy: worst relative Frobenius error of a TQ2_0 projection vs W_q: {worst:.3e}")
    return out


def read_gguf(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF file, dequantized to fp32 in its logical (rows, cols) shape."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape))  # gguf lists ne0 (the fastest dim) first
        out[t.name] = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
    return out


def verify_gguf(path: Path, source: Source, lossy: bool = False, embed_type: str = "f16") -> str:
    """Re-read the file: every tensor must dequantize to what expected_tensors says (exactly, unless lossy)."""
    got = read_gguf(path)
    want = expected_tensors(source, embed_type)
    missing = sorted(set(want) - set(got))
    if missing:
        raise AssertionError(f"{path}: tensor {missing[0]} is missing")
    worst = 0.0
    for name, tensor in want.items():
        if got[name].shape != tensor.shape:
            raise AssertionError(f"{path}: {name} has shape {got[name].shape}, expected {tensor.shape}")
        diff = float(np.abs(got[name] - tensor).max())
        if diff and not lossy:
            raise AssertionError(f"{path}: {name} differs from trits x fp16 scale by {diff:.3e}")
        worst = max(worst, diff)
    scales = [p.scales for p in _hf_parts(source)[1].values()]
    low = min(float(s.min()) for s in scales)
    note = "" if low >= 2**-14 else f"; the smallest scale {low:.2e} is subnormal in fp16"
    exact = "exactly" if worst == 0 else f"within {worst:.3e}"
    bits = 8 * path.stat().st_size / sum(math.prod(t.shape) for t in want.values())
    forward = forward_check(got, source)
    return (
        f"{len(want)} tensors dequantize {exact} to trits x fp16 scale ({bits:.2f} bits per weight overall, "
        f"TQ2_0 {8 * 66 / 256:.4f} per projection weight){note}; {forward.line()}"
    )


def forward_check(got: dict[str, np.ndarray], source: Source):
    """The dequantized file in a megatron model (no second quantization) against bitcpm's forward."""
    from bitcpm.export.hf import Verification, probe_tokens
    from bitcpm.export.source import build_single_rank
    from bitcpm.export.weights import greedy, megatron_logits
    from bitcpm.models.minicpm.hf_checkpoint import load_hf_tensors

    by_gguf = {gguf_name(n): n for n in [*_GLOBAL, *expected_hf_names(source)]}
    tensors = {}
    for name, array in got.items():
        if name not in by_gguf:
            continue  # rope factor tables
        hf_name = by_gguf[name]
        t = torch.from_numpy(array.copy())
        heads = _rope_heads(hf_name, source)
        tensors[hf_name] = _unpermute_rows(t, heads) if heads else t
    model = build_single_rank(source.job, quantized=False)
    load_hf_tensors([model], lambda names: {n: tensors[n] for n in names if n in tensors}, source.job.model, "minicpm")
    prompt = probe_tokens(source.job.model.vocab_size)
    theirs, ours = megatron_logits(model, prompt), megatron_logits(source.model, prompt)
    same = greedy(lambda t: megatron_logits(model, t), prompt, 8) == greedy(
        lambda t: megatron_logits(source.model, t), prompt, 8
    )
    return Verification(float((theirs - ours).abs().max()), same, prompt.shape[1])


def expected_hf_names(source: Source) -> list[str]:
    """HF names of every per-layer tensor of the model."""
    return [f"model.layers.{i}.{rest}" for i in range(source.job.model.num_layers) for rest in _LAYER_TENSORS]


def _unpermute_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of _permute_rows."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
