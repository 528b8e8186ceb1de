"""stage.init_from=<HF checkpoint>: tiny minicpm-layout checkpoints with LongRoPE, imported at tp=1 and tp=2,
give the logits of an independent plain-torch MiniCPM forward; mismatches are one line before any launch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, run_train
from tests.hf_reference import reference_logits, write_minicpm_checkpoint

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("hf_import_worker.py")


def _overrides(ckpt: Path) -> list[str]:
    from bitcpm.models.minicpm.hf_checkpoint import read_config
    from bitcpm.models.minicpm.hf_config import model_overrides

    return [*model_overrides(read_config(ckpt)), f"stage.init_from={ckpt}", "quant=none", "tracking=none"]


def _import_logits(tmp_path: Path, ckpt: Path, tokens: torch.Tensor, tp: int) -> torch.Tensor:
    torch.save(tokens, tmp_path / "tokens.pt")
    out = tmp_path / f"logits_tp{tp}.pt"
    _run_worker(tmp_path, ckpt, out, tp, [f"parallel.tp={tp}"])
    return torch.load(out)


def _run_worker(tmp_path: Path, ckpt: Path, out: Path, procs: int, extra: list[str]) -> None:
    from launchers.local import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={procs}"]
    cmd += ["--master-addr=127.0.0.1", f"--master-port={free_port()}", str(WORKER)]
    args = [str(out), str(tmp_path / "tokens.pt"), *_overrides(ckpt), *extra, "train.seq_length=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize(("tp", "window", "tied"), [(2, 256, False), (1, 256, True), (2, 64, True)])
def test_import_matches_plain_torch_forward(tmp_path: Path, tp: int, window: int, tied: bool) -> None:
    # window 256 > original 64: long factors and a cos/sin factor of sqrt(1 + ln 4 / ln 64); 64: short, 1.
    ckpt = write_minicpm_checkpoint(tmp_path / "hf", max_position_embeddings=window, tie_word_embeddings=tied)
    tokens = torch.randint(0, 8192, (2, 48), generator=torch.Generator().manual_seed(1))
    got = _import_logits(tmp_path, ckpt, tokens, tp)
    want = reference_logits(ckpt, tokens)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-4


@pytest.mark.integration
def test_pipeline_stages_read_their_own_layers(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    ckpt = write_minicpm_checkpoint(tmp_path / "hf", num_hidden_layers=4)
    torch.save(torch.zeros(1, 1, dtype=torch.long), tmp_path / "tokens.pt")
    out = tmp_path / "params_pp.pt"
    _run_worker(
        tmp_path, ckpt, out, 2, ["parallel.pp=2", "parallel.micro_batch_size=1", "parallel.global_batch_size=2"]
    )
    hf = load_file(str(ckpt / "model.safetensors"))
    stages = [torch.load(f"{out}.{rank}") for rank in range(2)]
    layers = [{int(k.split(":")[0]) for k in stage if ":" in k} for stage in stages]
    assert layers == [{0, 1}, {2, 3}]
    for stage in stages:
        for key, value in stage.items():
            if ":" not in key:
                continue
            layer, rest = key.split(":")
            hf_name = {
                "input_layernorm.weight": "input_layernorm.weight",
                "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
                "mlp.linear_fc2.weight": "mlp.down_proj.weight",
                "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
            }.get(rest)
            if hf_name:
                assert torch.equal(value, hf[f"model.layers.{layer}.{hf_name}"]), key
    assert torch.equal(stages[0]["embedding.word_embeddings.weight"], hf["model.embed_tokens.weight"])
    assert torch.equal(stages[1]["output_layer.weight"], hf["lm_head.weight"])
    assert torch.equal(stages[1]["decoder.final_layernorm.weight"], hf["model.norm.weight"])


def _preflight(base: list[str], *extra: str) -> str:
    from bitcpm.config.validate import ConfigError
    from bitcpm.frontend.compose import CommandLine, compose_job

    with pytest.raises(ConfigError) as info:
        compose_job(CommandLine(), [*base, *extra])
    assert "\n" not in str(info.value)
    return str(info.value)


def test_mismatches_name_the_tensor_or_key(tmp_path: Path) -> None:
    ckpt = write_minicpm_checkpoint(tmp_path / "hf")
    base = _overrides(ckpt)
    assert "config.json has hidden_size=128 but model.hidden_size=256" in _preflight(base, "model.hidden_size=256")
    assert "scale_emb=12.0 but model.scale_emb=10.0" in _preflight(base, "model.scale_emb=10")
    msg = _preflight(base, "model.rope.original_max_position_embeddings=128")
    assert "rope.original_max_position_embeddings=64" in msg
    assert "(set model.tie_embeddings=false)" in _preflight(base, "model.tie_embeddings=true")
    assert "stage.tokens=auto" in _preflight(base, "stage=qat", "quant=ternary_g128", "stage.tokens=auto")
    # A file whose tensors disagree with its own config.json: named by tensor.
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ckpt / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:200]
    del tensors["model.layers.0.self_attn.k_proj.weight"]
    save_file(tensors, str(ckpt / "model.safetensors"))
    assert "tensor model.layers.0.self_attn.k_proj.weight is missing (expected shape [64, 128])" in _preflight(base)
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(64, 128)
    tensors["model.layers.2.input_layernorm.weight"] = torch.ones(128)
    save_file(tensors, str(ckpt / "model.safetensors"))
    msg = _preflight(base)
    assert "tensor model.layers.1.mlp.up_proj.weight has shape [200, 128]" in msg and "expects [256, 128]" in msg
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(256, 128)
    save_file(tensors, str(ckpt / "model.safetensors"))
    assert "tensor model.layers.2.input_layernorm.weight has no place in the model" in _preflight(base)
    cfg = json.loads((ckpt / "config.json").read_text()) | {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert "only minicpm and llama layouts" in _preflight(base)


@pytest.mark.integration
def test_train_from_hf_checkpoint(tmp_path: Path, data_cache: Path) -> None:
    ckpt = write_minicpm_checkpoint(tmp_path / "hf")
    common = [*_overrides(ckpt), "train.seq_length=64", "train.steps=2", "optim.warmup_steps=1"]
    common += ["train.eval_interval=0", "train.eval_batches=1"]
    bad = run_train([*common, "model.num_kv_heads=4"], tmp_path, data_cache)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "num_key_value_heads=2 but model.num_kv_heads=4" in bad.stderr
    assert not (tmp_path / "out").exists()  # nothing was launched
    proc = run_train(common, tmp_path, data_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"initialised from Hugging Face checkpoint {ckpt}" in proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize("tied", [False, True])
def test_llama_checkpoint_saved_by_transformers_imports_at_tp2(tmp_path: Path, tied: bool) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=8192,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
    model.save_pretrained(str(tmp_path / "llama"))
    tokens = torch.randint(0, 8192, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(input_ids=tokens).logits
    got = _import_logits(tmp_path, tmp_path / "llama", tokens, 2)
    assert (got - want).abs().max().item() < 1e-4
