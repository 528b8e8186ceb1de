"""`export hf`: config.json + model.safetensors (fake-quantized: trits x scale) + tokenizer files, then verified.

Verification re-reads what was written and runs a forward on a few tokens: the `llama` layout through
transformers' LlamaForCausalLM (no remote code), the `minicpm` layout through bitcpm's own importer into a
fresh megatron model. Either is compared with bitcpm's forward of the source model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from bitcpm.export.source import Source
from bitcpm.export.weights import fake_quantized_state, greedy, megatron_logits

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
WEIGHTS = "model.safetensors"
SOURCE_RECORD = "bitcpm_source.json"
"""Which run and checkpoint an export came from (evaluation logs into that run's MLflow run)."""


@dataclass
class Verification:
    """A re-read export's forward against bitcpm's: max |logit difference| and greedy agreement."""

    max_abs_diff: float
    greedy_equal: bool
    tokens: int
    max_abs_logit: float = 0.0
    """Largest |logit| of bitcpm's forward (the scale a bf16 export's rounding error is judged against)."""

    def line(self) -> str:
        """One-line summary."""
        same = "identical" if self.greedy_equal else "DIFFERENT"
        return (
            f"max |logit diff| {self.max_abs_diff:.2e} (max |logit| {self.max_abs_logit:.2f}) over {self.tokens} "
            f"tokens, greedy continuation {same}"
        )


def probe_tokens(vocab_size: int, length: int = 12) -> torch.Tensor:
    """A fixed [1, length] prompt of token ids (deterministic, not all special tokens)."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(4, vocab_size, (1, length), generator=g)


def write_hf(source: Source, out: Path, layout: str, dtype: str) -> Path:
    """Write the export directory; returns it."""
    from safetensors.torch import save_file

    from bitcpm.export.tokenizer_files import write_tokenizer
    from bitcpm.models.minicpm.hf_config import hf_config
    from bitcpm.models.minicpm.hf_layout import to_hf

    cfg = source.job.model
    out.mkdir(parents=True, exist_ok=True)
    print(f"export hf: fake-quantizing {source.checkpoint}", flush=True)
    state = fake_quantized_state(source.model)
    tensors = {k: v.to(DTYPES[dtype]).contiguous() for k, v in to_hf(state, cfg, layout).items()}
    print(f"export hf: writing {len(tensors)} tensors ({layout} layout, {dtype}) to {out / WEIGHTS}", flush=True)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    ids = write_tokenizer(source.job.data.tokenizer, out, cfg.max_position_embeddings)
    config = hf_config(cfg, layout, bos_id=ids["bos_token_id"], eos_id=int(ids["eos_token_id"]), dtype=dtype)
    config["pad_token_id"] = ids["pad_token_id"]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    record = {
        "run_dir": str(source.run_dir.resolve()),
        "checkpoint": str(source.checkpoint.resolve()),
        "mlflow_run_id": source.mlflow_run_id,
        "layout": layout,
        "dtype": dtype,
    }
    (out / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    generation = {k: v for k, v in ids.items() if v is not None}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    return out


def exported_logits(out: Path, source: Source):
    """A logits function of the export as re-read from disk (fp32 compute)."""
    from bitcpm.models.minicpm.hf_checkpoint import read_config

    if read_config(out)["model_type"] == "llama":
        from transformers import AutoModelForCausalLM

        hf_model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()

        def run(tokens: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return hf_model(input_ids=tokens).logits.float()

        return run
    from bitcpm.export.source import build_single_rank
    from bitcpm.models.minicpm.hf_checkpoint import load_hf_weights

    model = build_single_rank(source.job, quantized=False)
    load_hf_weights([model], out, source.job.model)
    return lambda tokens: megatron_logits(model, tokens)


def verify_hf(out: Path, source: Source, steps: int = 8) -> Verification:
    """Re-read the export, check every tensor's shape, and compare its forward with bitcpm's."""
    from bitcpm.models.minicpm.hf_check import check_fields, check_tensors
    from bitcpm.models.minicpm.hf_checkpoint import read_config

    layout = check_fields(source.job.model, out, read_config(out))
    check_tensors(source.job.model, out, layout, with_head=layout == "llama" or not source.job.model.tie_embeddings)
    prompt = probe_tokens(source.job.model.vocab_size)
    run = exported_logits(out, source)
    theirs, ours = run(prompt), megatron_logits(source.model, prompt)
    diff = float((theirs - ours).abs().max())
    same = greedy(run, prompt, steps) == greedy(lambda t: megatron_logits(source.model, t), prompt, steps)
    scale = float(ours.abs().max())
    return Verification(max_abs_diff=diff, greedy_equal=same, tokens=prompt.shape[1], max_abs_logit=scale)
