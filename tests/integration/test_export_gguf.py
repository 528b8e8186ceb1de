"""export gguf: with group size 256 every ternary projection is TQ2_0 and dequantizes (through gguf's own
reader) to the trained trits x fp16-rounded scale exactly; group size 128 is refused with its message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_module, run_train
from tests.trained_runs import COMMON, TrainedPair, released_parallel_state, trained_pair  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("released_parallel_state")]


def _export(*args: str) -> subprocess.CompletedProcess:
    return run_module("bitcpm.export", ["gguf", *args], Path.cwd())


@pytest.fixture(scope="module")
def qat_g256(tmp_path_factory: pytest.TempPathFactory, trained_pair: TrainedPair, data_cache: Path) -> Path:  # noqa: F811
    cwd = tmp_path_factory.mktemp("qat_g256")
    args = [*COMMON, "stage=qat", "quant=ternary_g256", f"stage.init_from={trained_pair.pretrain}"]
    proc = run_train([*args, "stage.tokens=null", "stage.rewarmup_steps=1"], cwd, data_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next((cwd / "out").iterdir())


@pytest.mark.integration
def test_g256_round_trips_exactly_through_ggufs_reader(tmp_path: Path, qat_g256: Path) -> None:
    import gguf

    from bitcpm.export.gguf_export import gguf_name
    from bitcpm.export.source import open_source
    from bitcpm.export.weights import split_to_hf, ternary_state

    out = tmp_path / "model.gguf"
    proc = _export(str(qat_g256), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dequantize exactly" in proc.stdout and "greedy continuation identical" in proc.stdout
    reader = gguf.GGUFReader(str(out))
    fields = {name: field.parts[field.data[0]] for name, field in reader.fields.items() if field.data}
    source = open_source(qat_g256)
    cfg = source.job.model
    assert str(bytes(fields["general.architecture"]), "utf-8") == "minicpm"
    assert float(fields["minicpm.embedding_scale"][0]) == pytest.approx(cfg.scale_emb)
    assert float(fields["minicpm.residual_scale"][0]) == pytest.approx(cfg.scale_depth / cfg.num_layers**0.5)
    assert float(fields["minicpm.logit_scale"][0]) == pytest.approx(cfg.hidden_size / cfg.dim_model_base)
    tensors = {t.name: t for t in reader.tensors}
    ternary = {}
    for name, parts in ternary_state(source.model).items():
        ternary |= split_to_hf(name, parts, cfg)
    assert len(ternary) == 7 * cfg.num_layers
    for hf_name, parts in ternary.items():
        t = tensors[gguf_name(hf_name)]
        assert t.tensor_type == gguf.GGMLQuantizationType.TQ2_0
        deq = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).reshape(parts.trits.shape).copy())
        want = parts.trits.float().reshape(*parts.scales.shape, -1) * parts.scales.half().float().unsqueeze(-1)
        want = want.reshape(parts.trits.shape)
        if hf_name.endswith(("q_proj.weight", "k_proj.weight")):  # ggml's rotary row order: compare row sets
            deq, want = deq.sort(dim=0).values, want.sort(dim=0).values
        assert torch.equal(deq, want), hf_name
    embd = tensors["token_embd.weight"]
    assert embd.tensor_type == gguf.GGMLQuantizationType.F16
    emb = source.model.embedding.word_embeddings.weight.detach().half().numpy()
    assert np.array_equal(np.asarray(embd.data).reshape(emb.shape), emb)


@pytest.mark.integration
def test_g128_is_refused_with_the_lossless_choices(tmp_path: Path, trained_pair: TrainedPair) -> None:  # noqa: F811
    proc = _export(str(trained_pair.qat), str(tmp_path / "m.gguf"))
    assert proc.returncode == 2 and not (tmp_path / "m.gguf").exists()
    line = proc.stderr.strip().splitlines()[-1]
    assert "quant.group_size=128 cannot be stored exactly in TQ2_0" in line
    assert "quant.group_size=256" in line and "quant.group_size=-1" in line and "--lossy" in line
    proc = _export(str(trained_pair.qat), str(tmp_path / "m.gguf"), "--lossy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--lossy: worst relative Frobenius error" in proc.stdout


def test_gguf_rows_must_be_whole_blocks() -> None:
    from bitcpm.export.gguf_export import check_gguf_lossless
    from bitcpm.frontend.compose import CommandLine, compose_job

    job = compose_job(CommandLine(), ["quant=ternary_g256", "model.intermediate_size=640"], check_rules=False)
    with pytest.raises(ValueError, match="intermediate_size=640 is not a multiple of 256"):
        check_gguf_lossless(job, lossy=True)
