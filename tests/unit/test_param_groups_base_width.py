"""muP's optimizer groups at the base width: megatron matches param groups by (wd_mult, lr_mult) when it loads a
checkpoint, so a hidden-matrix group equal to the default one (m = 1, or sp) must not exist: it would break resuming."""

from __future__ import annotations

import pytest

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.training.build import param_group_overrides

pytestmark = pytest.mark.quick


@pytest.mark.parametrize(
    ("overrides", "groups"),
    [([], 2), (["model.dim_model_base=256"], 1), (["model.parameterization=sp"], 1)],
)
def test_a_hidden_group_exists_only_where_its_settings_differ(overrides: list[str], groups: int) -> None:
    job = compose_job(CommandLine(), overrides, check_rules=False)  # debug: width 256, dim_model_base 128 (m = 2)
    found = param_group_overrides(job.model, job.optim.eps)
    assert len(found) == groups
    assert {frozenset(v) for v in found.values()} >= {frozenset({"wd_mult"})}  # norms never decay
