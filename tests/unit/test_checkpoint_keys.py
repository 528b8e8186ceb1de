"""Which saved tensor serves a requested one: main params are stored three ways, everything else as is."""

from __future__ import annotations

import pytest

from bitcpm.training.sharded_state import _alias

pytestmark = pytest.mark.quick

K = "decoder.layers.mlp.linear_fc1.weight"


@pytest.mark.parametrize(
    ("requested", "saved", "served_by"),
    [
        (f"optimizer.state.exp_avg.{K}", {f"optimizer.state.exp_avg.{K}"}, f"optimizer.state.exp_avg.{K}"),
        # distributed optimizer (param) <-> non-distributed 16-bit optimizer (fp32_param)
        (f"optimizer.state.param.{K}", {f"optimizer.state.fp32_param.{K}", K}, f"optimizer.state.fp32_param.{K}"),
        (f"optimizer.state.fp32_param.{K}", {f"optimizer.state.param.{K}", K}, f"optimizer.state.param.{K}"),
        # an fp32 model without the distributed optimizer stores no main params: they are the weights
        (f"optimizer.state.param.{K}", {K, f"optimizer.state.exp_avg.{K}"}, K),
    ],
)
def test_alias(requested: str, saved: set[str], served_by: str) -> None:
    assert _alias(requested, saved) == served_by


@pytest.mark.parametrize("requested", [f"optimizer.state.exp_avg.{K}", K, f"optimizer.state.param.{K}"])
def test_missing_tensor_is_named(requested: str) -> None:
    with pytest.raises(ValueError, match="checkpoint has no tensor"):
        _alias(requested, {"embedding.word_embeddings.weight"})
