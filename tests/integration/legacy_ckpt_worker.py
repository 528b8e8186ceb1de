"""Writes a checkpoint the way bitcpm did before dist_checkpointing, and resumes a converted one.

write  (torchrun, any tp): the model and torch AdamW of RUN_DIR's config train STEPS steps of a fixed
       token stream, then every dp-rank-0 process saves checkpoints/step_<STEPS>/shard_tpXX_pp00.pt with
       the keys the old Session.save wrote; training goes on for MORE steps (the reference losses).
resume (one process, tp=1): load the newest checkpoint of RUN_DIR through load_checkpoint, train MORE steps.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch

SEED, BATCH = 99, 4


def _old_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """torch AdamW as earlier bitcpm built it: groups that record their parameters' names."""
    groups: dict[bool, dict] = {}
    for name, param in model.named_parameters():
        matrix = param.dim() >= 2
        group = groups.setdefault(matrix, {"params": [], "names": [], "weight_decay": weight_decay if matrix else 0.0})
        group["params"].append(param)
        group["names"].append(name)
    return torch.optim.AdamW(list(groups.values()), lr=lr, betas=(0.9, 0.95))


def _old_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor) -> float:
    """Earlier bitcpm's loop on one micro-batch: forward, backward, AdamW (tp ranks see the same batch)."""
    from bitcpm.quant.converter import refresh_quantized_weights
    from bitcpm.training.steps import mean_loss, model_inputs

    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = mean_loss(model(**model_inputs(tokens), labels=tokens[:, 1:]))[0]
    loss.backward()
    optimizer.step()
    refresh_quantized_weights(model)
    return float(loss.detach())


def _tokens(step: int, seq: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(SEED + step)
    return torch.randint(0, vocab, (BATCH, seq + 1), generator=g)


def main() -> None:
    mode, run_dir, steps, more, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    from megatron.core import parallel_state as ps
    from omegaconf import OmegaConf

    from bitcpm.backends import get_backend
    from bitcpm.config.load import load_job
    from bitcpm.models import build_model
    from bitcpm.quant.converter import convert_to_ternary
    from bitcpm.training import checkpoint as ckpt
    from bitcpm.training.distributed import init_distributed

    job = load_job(run_dir / "config.yaml")
    tp = int(os.environ.get("WORLD_SIZE", "1"))
    info = init_distributed(get_backend("cpu"), "gloo", tp, 1, 1, job.train.seed)
    model = build_model(job.model, seq_length=job.train.seq_length, tp=tp, dtype="float32", device="cpu")
    convert_to_ternary(model, job.quant)
    optimizer = _old_optimizer(model, job.optim.lr, job.optim.weight_decay)
    seq, vocab = job.train.seq_length, job.model.vocab_size
    losses, step = {}, 0
    if mode == "resume":
        step = ckpt.load_checkpoint(ckpt.complete_checkpoints(run_dir)[-1], [model], optimizer)["step"]
    for _ in range(steps if mode == "write" else 0):
        losses[step + 1] = _old_step(model, optimizer, _tokens(step, seq, vocab))
        step += 1
    if mode == "write":
        target = ckpt.step_dir(run_dir, step)
        if info.rank == 0:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
        torch.distributed.barrier()
        if info.dp_rank == 0:  # the old format: one torch file per tp rank
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": {"torch": torch.get_rng_state()},
                "step": step,
                "nan_skips": 0,
                "consumed_samples": step * BATCH,
                "mlflow_run_id": None,
                "config": OmegaConf.to_container(OmegaConf.structured(job)),
            }
            torch.save(state, target / f"shard_tp{info.tp_rank:02d}_pp00.pt")
        torch.distributed.barrier()
        if info.rank == 0:
            (target / ckpt.COMPLETE).write_text(f"{step}\n")
    for _ in range(more):
        losses[step + 1] = _old_step(model, optimizer, _tokens(step, seq, vocab))
        step += 1
    if info.rank == 0:
        Path(out).write_text(json.dumps(losses))
    ps.destroy_model_parallel()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
