"""A finished run's newest checkpoint loses the end of a shard: the rerun warns once and resumes from the previous
checkpoint to the same losses; a stage started from the damaged checkpoint stops in one line before launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from bitcpm.export.__main__ import main as export_main
from bitcpm.training import verify as verify_cli
from bitcpm.training.metrics_log import metric_series
from tests.conftest import only_run_dir, run_train

pytestmark = pytest.mark.integration

BASE = [
    "experiment=smoke",
    "train.steps=8",
    "train.save_interval=2",
    "train.keep_checkpoints=2",
    "train.eval_interval=0",
    "tracking.log_interval=1",
]


def _final_val(stdout: str) -> float:
    return float(stdout.split("validation loss ")[-1].split()[0])


def test_truncated_shard_is_named_skipped_on_resume_and_refused_as_init_from(
    tmp_path: Path, data_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained = run_train(BASE, tmp_path, data_cache)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    reference = metric_series(run_dir / "metrics.jsonl", "loss")
    newest = run_dir / "checkpoints" / "step_00000008"
    shard = max(newest.glob("*.distcp"), key=lambda p: p.stat().st_size)
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    assert verify_cli.main([str(run_dir)]) == 1
    assert export_main(["hf", str(run_dir), str(tmp_path / "hf")]) == 2  # refused before the model is built
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("bitcpm.export: error: ") and f"damaged: {shard.name}: size" in err[0]

    other = tmp_path / "qat"
    other.mkdir()
    qat = ["stage=qat", f"stage.init_from={newest}", "stage.tokens=null", "stage.rewarmup_steps=1"]
    refused = run_train([*BASE, *qat], other, data_cache)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("bitcpm: error:")]
    assert len(errors) == 1 and f"is damaged: {shard.name}: size differs" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr

    rerun = run_train(BASE, tmp_path, data_cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    warnings = [ln for ln in rerun.stdout.splitlines() if "is damaged" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("bitcpm: warning:") and shard.name in warnings[0]
    assert "(step 6)" in rerun.stdout and "fresh start" not in rerun.stdout
    assert metric_series(run_dir / "metrics.jsonl", "loss") == reference  # steps 7 and 8 again, bit for bit
    assert _final_val(rerun.stdout) == _final_val(trained.stdout)
    assert verify_cli.main([str(run_dir)]) == 0  # step 8 written anew; the damaged one kept aside
    assert (run_dir / "checkpoints" / "damaged_step_00000008").is_dir()
