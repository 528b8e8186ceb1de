"""Each validation rule rejects its bad input with a one-line message naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from tests.support.config_errors import config_error

pytestmark = pytest.mark.quick


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["parallel.tp=3"], "parallel.tp=3 must divide model.num_attention_heads=4"),
        (["model=0.5b", "quant=none", "parallel.tp=4"], "parallel.tp=4 must divide model.num_kv_heads=2"),
        (["model.num_kv_heads=3"], "model.num_kv_heads=3 must divide model.num_attention_heads=4"),
        (
            ["model=wt9m"],
            "quant.group_size=128 must divide the per-rank input of linear_qkv: model.hidden_size=320",
        ),
        (["quant.group_size=100"], "quant.group_size=100"),
        (["parallel=tp2", "quant=ternary_g256"], "linear_proj"),
        (["quant.targets=[linear_qkv,lm_head]"], "quant.targets[1]=lm_head: expected one of"),
        (["parallel.global_batch_size=12"], "parallel.global_batch_size=12 must be divisible by"),
        (["launcher.procs_per_node=3", "parallel=tp2"], "world size 3"),
        (["stage=qat"], "stage.init_from is required for stage=qat"),
        (["stage=qat", "stage.init_from=x", "quant=none"], "stage=qat needs a quantizer"),
        (["stage=distill", "stage.init_from=x"], "stage.teacher_from is required"),
        (["stage=distill", "stage.init_from=x", "stage.teacher_from=y", "stage.alpha=2"], "stage.alpha=2.0"),
        (["stage.tokens=lots"], "stage.tokens=lots"),
        (["stage.tokens=auto"], "stage.tokens=auto only applies"),
        (["parallel.sequence_parallel=true"], "parallel.sequence_parallel=true needs parallel.tp > 1"),
        (["parallel.pp=2"], "parallel.pp=2 needs at least pp micro-batches per step"),
        (["parallel.cp=2"], "parallel.cp=2: context parallelism is not available"),
        (["train.seq_length=2048"], "train.seq_length=2048 exceeds model.max_position_embeddings=1024"),
        (["model.rope.type=longrope"], "model.rope.short_factor"),
        (["optim.warmup_steps=95"], "optim.warmup_steps=95"),
        (["optim.decay_style=cosine"], "optim.decay_style=cosine: expected one of"),
        (["data.valid_fraction=0.9"], "data.valid_fraction=0.9"),
        (["data.sources=[]"], "data.sources is empty"),
        (["tracking.backend=wandb"], "tracking.backend=wandb"),
        (["hardware.device=tpu"], "hardware.device=tpu"),
        (["train.steps=0"], "train.steps=0: expected a value >= 1"),
    ],
)
def test_rule_rejects_with_key(overrides: list[str], expected: str) -> None:
    assert expected in config_error(overrides)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model=8x"], "model=8x: no such option"),
        (["parallel.tp=abc"], "parallel.tp"),
        (["parallel.foo=1"], "parallel.foo"),
        (["+foo=1"], "foo: unknown key"),
        (["model.hidden_size=1.5"], "model.hidden_size"),
        (["quant=ternary_g128", "parallel.tp=3"], "parallel.tp=3"),
        (["stage=qat", "quant=none"], "stage=qat needs a quantizer"),
        (["parallel.global_batch_size=7"], "parallel.global_batch_size=7"),
        (["model=wt9m"], "quant.group_size=128"),
    ],
)
def test_cli_prints_one_line_and_exits_nonzero(args: list[str], expected: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "bitcpm.train", *args, "dry_run=true"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bitcpm: error: ")
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr


def test_valid_layouts_pass() -> None:
    compose_job(CommandLine(), ["parallel=tp2"])
    compose_job(CommandLine(), ["model=8b", "quant=ternary_g128", "parallel.tp=2", "hardware=h100"])
    compose_job(CommandLine(), ["model=wt9m", "quant=ternary_g32"])
