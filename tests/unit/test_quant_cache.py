"""Once-per-step ternary weights: invalidation by version counter, reuse across micro-batches and recompute,
and a cached model that trains bit for bit like an uncached one."""

from __future__ import annotations

import pytest
import torch

import bitcpm.quant.converter as converter
from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.quant.cache import QuantizedWeightCache

pytestmark = [pytest.mark.quick, pytest.mark.filterwarnings("ignore::UserWarning")]


# --- the cache on its own ---------------------------------------------------------------------------------
def test_entry_survives_reads_and_dies_on_every_tracked_write() -> None:
    lin = torch.nn.Linear(8, 4, bias=False)
    cache = QuantizedWeightCache()
    cache.store(lin.weight, torch.ones(4, 8))
    assert cache.lookup(lin.weight) is not None
    _ = lin(torch.randn(2, 8)).sum()  # reading the weight changes nothing
    assert cache.lookup(lin.weight) is not None

    lin.weight.grad = torch.ones(4, 8)
    torch.optim.AdamW(lin.parameters()).step()
    assert cache.lookup(lin.weight) is None, "an optimizer step must invalidate"

    cache.store(lin.weight, torch.ones(4, 8))
    lin.load_state_dict({"weight": torch.zeros(4, 8)})
    assert cache.lookup(lin.weight) is None, "load_state_dict must invalidate"

    cache.store(lin.weight, torch.ones(4, 8))
    with torch.no_grad():
        lin.weight.mul_(2)
    assert cache.lookup(lin.weight) is None, "any in-place write must invalidate"


def test_writes_through_data_need_an_explicit_clear() -> None:
    # The documented hole: .data shares storage but not the version counter.
    lin = torch.nn.Linear(8, 4, bias=False)
    cache = QuantizedWeightCache()
    cache.store(lin.weight, torch.ones(4, 8))
    lin.weight.data.add_(1.0)
    assert cache.lookup(lin.weight) is not None
    cache.clear()
    assert cache.lookup(lin.weight) is None and not cache.filled


def test_inference_mode_is_never_cached() -> None:
    w = torch.randn(4, 8)
    cache = QuantizedWeightCache()
    with torch.inference_mode():
        cache.store(w, torch.ones(4, 8))
    assert not cache.filled


# --- on the megatron model --------------------------------------------------------------------------------
def _job(*overrides: str):
    return compose_job(
        CommandLine(),
        ["quant=ternary_g64", "model.num_layers=2", "train.seq_length=16", "parallel.micro_batch_size=2", *overrides],
    )


def _engine(job, recompute: str = "none"):
    """The training engine (megatron DDP + optimizer + schedule) of a small ternary model."""
    from dataclasses import replace

    from bitcpm.training.build import build_engine

    job = replace(job, parallel=replace(job.parallel, recompute=recompute))
    return build_engine(job, 1, 1e-3)


def _linears(engine):
    return converter.ternary_modules(engine.raw_chunks()[0])


def _batches(vocab: int, n: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(0, vocab, (2, 17), generator=gen) for _ in range(n)]


@pytest.fixture
def count_quantizations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = converter.quantize_weight

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(converter, "quantize_weight", counting)
    return calls


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_quantized_once_per_step_across_micro_batches_and_recompute(dist_cpu, count_quantizations, recompute):
    from bitcpm.training.steps import train_step

    job = _job()
    engine = _engine(job, recompute)
    n_linear = len(_linears(engine))
    train_step(engine, _batches(job.model.vocab_size, 3))
    # 3 micro-batches (+ recomputed forwards when recompute=full), yet one W_q per linear.
    assert count_quantizations[0] == n_linear
    assert all(not m.ternary_cache.filled for m in _linears(engine)), "refresh after step"
    train_step(engine, _batches(job.model.vocab_size, 3))
    assert count_quantizations[0] == 2 * n_linear


def test_uncached_quantizes_every_forward(dist_cpu, count_quantizations):
    from bitcpm.training.steps import train_step

    job = _job("quant.cache=false")
    engine = _engine(job)
    train_step(engine, _batches(job.model.vocab_size, 3))
    assert count_quantizations[0] == 3 * len(_linears(engine))


def test_cached_training_is_bitwise_identical_to_uncached(dist_cpu):
    from bitcpm.training.steps import evaluate, train_step

    job = _job()
    cached = _engine(job)
    uncached = _engine(job)  # weights are seeded by name: the same initial weights
    for m in _linears(uncached):
        m.quant_cache = False
    # The pre-cache quantizer, written out: W + stopgrad(W_q - W) recomputed on every call.
    reference = _engine(job)
    for m in _linears(reference):
        m.quant_cache = False
        m.ternary_weight = lambda w, g, m=m: (
            w + (converter.quantize_weight(w, m.quant_group_size, m.quant_eps, g) - w).detach()
        )
    engines = (cached, uncached, reference)
    vocab = job.model.vocab_size
    for step in range(3):
        results = [train_step(e, _batches(vocab, 2 + step)) for e in engines]
        assert results[0].loss == results[1].loss and results[0].grad_norm == results[1].grad_norm
        # The written-out STE rounds W_q twice: the same numbers up to float noise, not bit for bit.
        assert results[2].loss == pytest.approx(results[0].loss, rel=1e-5)
    states = [e.raw_chunks()[0].state_dict() for e in (cached, uncached)]
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
    assert evaluate(cached, _batches(vocab)) == evaluate(uncached, _batches(vocab))


def test_load_state_dict_invalidates_without_refresh(dist_cpu):
    from bitcpm.training.steps import evaluate

    job = _job()
    engine, other = _engine(job), _engine(job)
    with torch.no_grad():
        for p in other.raw_chunks()[0].parameters():
            p.mul_(0.5)
    batches = _batches(job.model.vocab_size)
    before = evaluate(engine, batches)  # fills the caches
    assert all(m.ternary_cache.filled for m in _linears(engine))
    # Into megatron's DDP parameter buffer: the copy bumps the buffer's (shared) version counter.
    engine.raw_chunks()[0].load_state_dict(other.raw_chunks()[0].state_dict())
    assert evaluate(engine, batches) == evaluate(other, batches) != before
