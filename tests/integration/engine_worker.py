"""One rank of an engine layout test: `torchrun ... engine_worker.py OUT_DIR key=value ...`.

Builds the job's engine (bitcpm.training.build), trains train.steps steps on a fixed synthetic global batch
stream split over data-parallel ranks exactly as the session splits real data, validates on a fixed set, and
writes (rank 0) losses.json plus (every dp-rank-0 process) the trits of its quantized weights by global name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def global_batch(step: int, gbs: int, seq: int, vocab: int, seed: int) -> torch.Tensor:
    """The step's whole global batch: the same tokens whatever the layout."""
    return torch.randint(0, vocab, (gbs, seq + 1), generator=torch.Generator().manual_seed(seed * 7919 + step))


def my_micro_batches(block: torch.Tensor, layout, dp_rank: int) -> list[torch.Tensor]:
    """This dp rank's micro-batches, interleaved over dp as bitcpm.training.session does."""
    mbs = layout.micro_batch_size
    starts = [(i * layout.dp + dp_rank) * mbs for i in range(block.shape[0] // (mbs * layout.dp))]
    return [block[s : s + mbs] for s in starts]


def trits_by_name(engine) -> dict[str, dict]:
    """Sign of W_q (the trit) of every ternary weight on this rank, by its name in the unsplit model."""
    from megatron.core import parallel_state

    from bitcpm.models.minicpm.init import global_names
    from bitcpm.quant.converter import ternary_modules
    from bitcpm.quant.kernels import quantize_weight

    out = {}
    tp_group = parallel_state.get_tensor_model_parallel_group()
    for chunk in engine.raw_chunks():
        names = global_names(chunk)
        by_module = {id(m): n for n, m in chunk.named_modules()}
        for module in ternary_modules(chunk):
            name = by_module[id(module)] + ".weight"
            with torch.no_grad():
                w = module.weight
                q = quantize_weight(
                    w, module.quant_group_size, module.quant_eps, tp_group if module.split_input else None
                )
            out[names[name]] = {
                "trits": torch.sign(q).to(torch.int8),
                "dim": int(w.partition_dim),
                "stride": int(getattr(w, "partition_stride", 1)),
            }
    return out


def main(out_dir: str, overrides: list[str]) -> None:
    from megatron.core import parallel_state

    from bitcpm.backends import get_backend
    from bitcpm.config.validate import validate
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.training.build import build_engine, set_lr
    from bitcpm.training.distributed import init_distributed, shutdown_distributed
    from bitcpm.training.stage import stage_schedule
    from bitcpm.training.steps import evaluate, train_step

    # Synthetic batches of the job's own vocabulary: the config rules apply, the shipped tokenizer does not.
    job = compose_job(CommandLine(), overrides, check_rules=False)
    validate(job)
    p, t = job.parallel, job.train
    backend = get_backend("cpu")
    backend.prepare()
    info = init_distributed(backend, "gloo", p.tp, p.pp, p.cp, t.seed, p.virtual_pp)
    try:
        schedule, base_lr = stage_schedule(job)
        engine = build_engine(job, info.world_size, base_lr)
        lay, vocab = engine.layout, job.model.vocab_size
        val_set = [global_batch(10_000 + i, p.global_batch_size, t.seq_length, vocab, t.seed) for i in range(2)]
        val_batches = [mb for block in val_set for mb in my_micro_batches(block, lay, info.dp_rank)]
        losses, norms, vals = [], [], [evaluate(engine, val_batches)]
        for step in range(t.steps):
            set_lr(engine.optimizer, base_lr, schedule(step), job.optim.weight_decay)
            block = global_batch(step, p.global_batch_size, t.seq_length, vocab, t.seed)
            result = train_step(engine, my_micro_batches(block, lay, info.dp_rank), step=step)
            losses.append(result.loss)
            norms.append(result.grad_norm)
        vals.append(evaluate(engine, val_batches))
        out = Path(out_dir)
        if job.quant.enabled and info.dp_rank == 0:
            torch.save(
                {
                    "tp": lay.tp,
                    "tp_rank": info.tp_rank,
                    "trits": trits_by_name(engine),
                    "pp_rank": parallel_state.get_pipeline_model_parallel_rank(),
                },
                out / f"trits_rank{info.rank}.pt",
            )
        if info.rank == 0:
            summary = {"loss": losses, "grad_norm": norms, "val_loss": vals, "dp": lay.dp}
            summary["distributed_optimizer"] = lay.distributed_optimizer
            summary["optimizer"] = type(engine.optimizer).__name__
            (out / "losses.json").write_text(json.dumps(summary))
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
