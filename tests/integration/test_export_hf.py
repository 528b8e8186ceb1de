"""export hf: a debug model trained with QAT, exported in the llama layout, loads in transformers with its
tokenizer and computes bitcpm's logits and greedy continuations; the minicpm layout keeps the muP constants."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import run_module
from tests.trained_runs import TrainedPair, released_parallel_state, trained_pair  # noqa: F401 - fixtures

PROMPT = "The history of the city begins with"

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("released_parallel_state")]


def _export(source: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return run_module("bitcpm.export", ["hf", str(source), str(out), *args], Path.cwd())


@pytest.fixture(scope="module")
def qat_model(trained_pair: TrainedPair):  # noqa: F811
    from bitcpm.export.source import open_source

    return open_source(trained_pair.qat)


@pytest.mark.integration
def test_llama_export_loads_in_transformers_with_bitcpms_logits(
    tmp_path: Path,
    trained_pair: TrainedPair,  # noqa: F811
    qat_model,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bitcpm.data.tokenizer import load_tokenizer
    from bitcpm.export.weights import greedy, megatron_logits

    out = tmp_path / "hf"
    proc = _export(trained_pair.qat, out, "--layout", "llama", "--dtype", "fp32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "greedy continuation identical" in proc.stdout
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    assert ids[0].tolist() == load_tokenizer("builtin").encode(PROMPT)  # the run's tokenizer, no extra specials
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
    ours = megatron_logits(qat_model.model, ids)
    assert (theirs - ours).abs().max().item() < 1e-4
    generated = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated[0, ids.shape[1] :].tolist() == greedy(lambda t: megatron_logits(qat_model.model, t), ids, 10)


@pytest.mark.integration
def test_exported_projections_are_ternary_times_scale(
    tmp_path: Path,
    trained_pair: TrainedPair,  # noqa: F811
    qat_model,
) -> None:
    from safetensors.torch import load_file

    from bitcpm.export.weights import ternary_state
    from bitcpm.models.minicpm.hf_layout import residual_multiplier

    out = tmp_path / "hf"
    assert _export(trained_pair.qat, out).returncode == 0  # llama, bf16 by default
    tensors = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    cfg = qat_model.job.model
    parts = ternary_state(qat_model.model)["decoder.layers.1.self_attention.linear_proj.weight"]
    o_proj = tensors["model.layers.1.self_attn.o_proj.weight"].float()
    # trits x (scale x scale_depth / sqrt(L)), rounded once to bf16
    folded = (parts.dequantize() * residual_multiplier(cfg)).to(torch.bfloat16).float()
    assert torch.equal(o_proj, folded)
    grouped = o_proj.reshape(o_proj.shape[0], -1, 128)
    for group in grouped.reshape(-1, 128)[:64]:
        assert len(set(group.abs().tolist()) - {0.0}) <= 1  # one magnitude per group: ternary x scale
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "scale_emb" not in config and config["tie_word_embeddings"] is False


@pytest.mark.integration
def test_minicpm_layout_keeps_mup_constants(tmp_path: Path, trained_pair: TrainedPair, qat_model) -> None:  # noqa: F811
    from safetensors.torch import load_file

    from bitcpm.export.weights import fake_quantized_state

    out = tmp_path / "hf"
    proc = _export(trained_pair.qat, out, "--layout", "minicpm", "--dtype", "fp32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    cfg = qat_model.job.model
    assert (config["scale_emb"], config["scale_depth"], config["dim_model_base"]) == (
        cfg.scale_emb,
        cfg.scale_depth,
        cfg.dim_model_base,
    )
    assert config["architectures"] == ["MiniCPMForCausalLM"] and config["tie_word_embeddings"] is True
    tensors = load_file(str(out / "model.safetensors"))
    state = fake_quantized_state(qat_model.model)
    assert "lm_head.weight" not in tensors  # tied, as trained
    assert torch.equal(tensors["model.embed_tokens.weight"], state["embedding.word_embeddings.weight"])
    assert torch.equal(tensors["model.layers.0.mlp.down_proj.weight"], state["decoder.layers.0.mlp.linear_fc2.weight"])
    # verified by re-importing into a megatron model: the same weights, so the same logits
    diff = float(re.search(r"max \|logit diff\| (\S+)", proc.stdout).group(1))
    assert diff < 1e-6 and "greedy continuation identical" in proc.stdout


def test_bad_source_is_one_line(tmp_path: Path) -> None:
    proc = _export(tmp_path / "nowhere", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such bitcpm run or checkpoint directory" in proc.stderr
