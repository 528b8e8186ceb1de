"""Every preset composes against the schema, and the front end stays free of torch/megatron."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job, parse_command_line
from bitcpm.presets import conf_dir
from tests.support.finished_run import finished_run

pytestmark = pytest.mark.quick

GROUPS = ["model", "parallel", "quant", "stage", "data", "optim", "tracking", "launcher", "hardware"]

# What each group needs so the rest of the default job stays valid with it.
COMPANIONS = {
    ("stage", "qat"): ["stage.init_from={run}"],
    ("stage", "distill"): ["stage.init_from={run}", "stage.teacher_from={run}"],
    ("quant", "ternary_g256"): ["model=0.5b", "train.seq_length=256"],
    ("parallel", "tp4"): ["model=wt100m", "quant=none"],
    ("parallel", "tp8"): ["model=wt30m", "quant=none"],
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def _companions(group: str, option: str) -> list[str]:
    extra = COMPANIONS.get((group, option), [])
    if group == "model" and option != "debug":
        # Published sizes use the 73k MiniCPM vocabulary and wide layers: plan them in full precision.
        extra = ["quant=none"]
    if group == "hardware" and option != "cpu":
        extra = []
    return extra


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)], ids=lambda x: str(x))
def test_every_preset_composes_and_validates(group: str, option: str, tmp_path) -> None:
    run = finished_run(tmp_path / "run")  # a complete source run for stages that start from one
    overrides = [f"{group}={option}", *(c.format(run=run) for c in _companions(group, option))]
    job = compose_job(CommandLine(), overrides)
    node = getattr(job, group)
    assert node is not None
    if group == "model":
        assert job.model.name == option
        assert job.model.source, "every model preset cites its source"


def test_every_experiment_composes() -> None:
    for name in _options("experiment"):
        job = compose_job(CommandLine(), [f"experiment={name}"])
        assert job.experiment_name == name


def test_default_job_is_the_debug_ternary_cpu_run() -> None:
    job = compose_job(CommandLine(), [])
    assert (job.model.name, job.quant.method, job.hardware.device, job.tracking.backend) == (
        "debug",
        "ternary",
        "cpu",
        "mlflow",
    )


def test_user_config_dir_adds_presets(tmp_path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text(
        "defaults:\n  - debug\n  - _self_\nname: mine\nsource: test\nnum_layers: 2\n"
    )
    cmd = parse_command_line(["--config-dir", str(tmp_path), "model=mine"])
    job = compose_job(cmd, cmd.overrides)
    assert (job.model.name, job.model.num_layers, job.model.hidden_size) == ("mine", 2, 256)


def test_plan_path_does_not_import_torch_or_megatron() -> None:
    code = (
        "import sys; from bitcpm.train import main; main(['model=8b', 'quant=none', 'dry_run=true']);"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron', 'mlflow')];"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "8.19B parameters" in out


def test_cfg_job_resolve_prints_the_resolved_config() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bitcpm.train", "model=8b", "stage=qat", "--cfg", "job", "--resolve"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "hidden_size: 4096" in proc.stdout and "name: qat" in proc.stdout and "lr: 0.005" in proc.stdout
