"""export packed on the QAT debug run: unpacking gives the HF (minicpm, bf16) export's tensors bit for bit,
and the printed size is at most 1.7 bits per weight at g128 for 5 trits per byte, scales included."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import run_module
from tests.trained_runs import TrainedPair, released_parallel_state, trained_pair  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("released_parallel_state")]


def _run(*args: str) -> subprocess.CompletedProcess:
    return run_module("bitcpm.export", list(args), Path.cwd())


@pytest.mark.integration
@pytest.mark.parametrize(("bits", "limit"), [("1.6", 1.7), ("2", 2.1)])
def test_packed_round_trip_is_bit_exact(tmp_path: Path, trained_pair: TrainedPair, bits: str, limit: float) -> None:  # noqa: F811
    from safetensors.torch import load_file

    from bitcpm.export.packed import unpack

    packed = tmp_path / "model.packed.safetensors"
    proc = _run("packed", str(trained_pair.qat), str(packed), "--bits", bits)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bpw = float(re.search(r"at (\S+) bits per weight including scales \(group size 128\)", proc.stdout).group(1))
    assert bpw <= limit
    hf = tmp_path / "hf"
    assert _run("hf", str(trained_pair.qat), str(hf), "--layout", "minicpm").returncode == 0
    want = load_file(str(hf / "model.safetensors"))
    got = unpack(packed)
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    # the file is smaller than the bf16 export by what the projections save
    assert packed.stat().st_size < (hf / "model.safetensors").stat().st_size


def test_a_full_precision_run_is_refused_in_one_line(tmp_path: Path, trained_pair: TrainedPair) -> None:  # noqa: F811
    """The trained full-precision run has no ternary weights: one line naming it, nothing written (this used to end
    in a ZeroDivisionError traceback after the packing)."""
    for fmt in ("packed", "gguf"):
        out = tmp_path / f"model.{fmt}"
        proc = _run(fmt, str(trained_pair.pretrain), str(out))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert str(trained_pair.pretrain) in lines[0] and "full-precision run" in lines[0]
        assert not out.exists()


def test_an_export_that_fails_part_way_leaves_nothing(tmp_path: Path, trained_pair: TrainedPair, monkeypatch) -> None:  # noqa: F811
    import bitcpm.export.packed as packed
    from bitcpm.export.__main__ import main

    def crash(path: Path, source) -> None:
        assert path.is_file()  # written, then the verification fails
        raise RuntimeError("verification crashed")

    monkeypatch.setattr(packed, "verify_packed", crash)
    out = tmp_path / "new" / "dirs" / "model.packed.safetensors"
    with pytest.raises(RuntimeError, match="verification crashed"):
        main(["packed", str(trained_pair.qat), str(out)])
    assert list(tmp_path.iterdir()) == []
