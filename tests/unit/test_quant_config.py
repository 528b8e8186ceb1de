"""quant.kernel and quant.cache: defaults, presets and the validation rule."""

from __future__ import annotations

import pytest

from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import CommandLine, compose_job

pytestmark = pytest.mark.quick


def test_defaults_are_auto_and_cached() -> None:
    q = compose_job(CommandLine(), []).quant
    assert (q.kernel, q.cache) == ("auto", True)


@pytest.mark.parametrize("kernel", ["eager", "compile", "auto"])
def test_cpu_accepts_portable_kernels(kernel: str) -> None:
    assert compose_job(CommandLine(), [f"quant.kernel={kernel}", "quant.cache=false"]).quant.kernel == kernel


def test_unknown_kernel_is_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"^quant.kernel=fast: expected one of auto, eager, compile, triton$"):
        compose_job(CommandLine(), ["quant.kernel=fast"])


def test_triton_needs_cuda() -> None:
    with pytest.raises(ConfigError, match=r"^quant.kernel=triton needs hardware.device=cuda \(got cpu\)"):
        compose_job(CommandLine(), ["quant.kernel=triton"])
    assert compose_job(CommandLine(), ["quant.kernel=triton", "hardware=h100"]).quant.kernel == "triton"


@pytest.mark.parametrize(
    ("overrides", "label"),
    [(["quant=none"], "none"), (["quant=ternary_g64"], "ternary_g64"), (["quant=ternary_channel"], "ternary_channel")],
)
def test_one_quantizer_label_names_the_preset_everywhere(overrides: list[str], label: str) -> None:
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.frontend.rundir import run_dir_for
    from bitcpm.frontend.submission import plan_text

    job = compose_job(CommandLine(), [*overrides, "model=0.5b"])
    assert job.quant.label == label
    assert f"-{label}-" in run_dir_for(job).name
    assert f"quant      {label} " in plan_text(job)
