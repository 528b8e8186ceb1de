"""torchrun worker for the checkpoint tests: megatron's engine on a tiny MiniCPM, fp32, CPU, gloo.

Trains `--steps` steps of a fixed token stream at one (tp, pp, dp, distributed optimizer) layout,
optionally resuming from a checkpoint and saving through bitcpm.training.checkpoint, and writes the
global loss of every step (and, with --dump-optimizer, the optimizer's model-space state) to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

VOCAB, SEQ, GLOBAL_BATCH, SEED = 128, 16, 4, 1234


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--dist-opt", action="store_true")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--save-every", type=int, default=0)
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--resave-to", type=Path, help="after resuming, save the loaded state into this run directory")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args()


def _model_cfg():
    from bitcpm.config.model import ModelConfig

    return ModelConfig(
        name="ckpt-test",
        hidden_size=64,
        intermediate_size=128,
        num_layers=4,
        num_attention_heads=4,
        num_kv_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )


def _build(tp: int, pp: int, dist_opt: bool):
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.models.gpt import GPTModel
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from bitcpm.models.minicpm.attention import minicpm_layer_spec
    from bitcpm.models.minicpm.model import transformer_config

    cfg = _model_cfg()
    config = dataclasses.replace(transformer_config(cfg, tp=tp), pipeline_model_parallel_size=pp)
    model = GPTModel(
        config=config,
        transformer_layer_spec=minicpm_layer_spec("cpu"),
        vocab_size=cfg.vocab_size,
        max_sequence_length=cfg.max_position_embeddings,
        pre_process=ps.is_pipeline_first_stage(),
        post_process=ps.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=True,
        position_embedding_type="rope",
        parallel_output=True,
    )
    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=dist_opt)
    chunk = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    from megatron.core.distributed import finalize_model_grads

    config.finalize_model_grads_func = finalize_model_grads
    opt_config = OptimizerConfig(
        optimizer="adam",
        lr=3e-3,
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        clip_grad=1.0,
        use_distributed_optimizer=dist_opt,
    )
    return [chunk], get_megatron_optimizer(opt_config, [chunk]), config


def _tokens(step: int) -> torch.Tensor:
    """The global batch of `step`: the same at every layout."""
    g = torch.Generator().manual_seed(SEED + step)
    return torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ + 1), generator=g)


def _train_step(chunks, optimizer, config, step: int) -> float:
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from bitcpm.training.steps import causal_mask

    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    mine = _tokens(step)[dp_rank::dp]
    mask = causal_mask(SEQ, torch.device("cpu"))
    positions = torch.arange(SEQ).unsqueeze(0)

    def forward_step(data_iterator, model):
        tokens = next(data_iterator)
        out = model(tokens[:, :-1], positions, mask, labels=tokens[:, 1:])

        def loss_func(per_token):
            loss = per_token.float().mean()
            return loss, {"loss": loss.detach().clone()}  # the schedule divides loss in place

        return out, loss_func

    for c in chunks:
        c.zero_grad_buffer()
    optimizer.zero_grad()
    results = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter([mine[i : i + 1] for i in range(len(mine))]),
        model=chunks,
        num_microbatches=len(mine),
        seq_length=SEQ,
        micro_batch_size=1,
        forward_only=False,
    )
    optimizer.step()
    local = torch.zeros(())
    if ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0:
        local = torch.stack([r["loss"] for r in results]).mean() / dp
    dist.all_reduce(local)
    return float(local)


def main() -> None:
    a = _args()
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    from bitcpm.backends import cpu
    from bitcpm.training import checkpoint as ckpt

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    cpu.after_process_group()  # the CPU backend's shim for megatron's DDP, optimizer and schedules
    ps.initialize_model_parallel(tensor_model_parallel_size=a.tp, pipeline_model_parallel_size=a.pp)
    tensor_parallel.model_parallel_cuda_manual_seed(SEED)
    torch.manual_seed(SEED)
    chunks, optimizer, config = _build(a.tp, a.pp, a.dist_opt)
    step, losses = 0, {}
    latest = (ckpt.complete_checkpoints(a.run_dir) or [None])[-1]
    if a.resume:
        extra = ckpt.load_checkpoint(latest, chunks, optimizer)
        step, losses = extra["step"], {int(k): v for k, v in extra["losses"].items()}
        if a.resave_to:
            ckpt.save_checkpoint(a.resave_to, step, chunks, optimizer, extra, keep=1)
    while step < a.steps:
        losses[step + 1] = _train_step(chunks, optimizer, config, step)
        step += 1
        if a.save_every and step % a.save_every == 0:
            ckpt.save_checkpoint(a.run_dir, step, chunks, optimizer, {"step": step, "losses": losses}, keep=a.keep)
    if dist.get_rank() == 0:
        a.out.write_text(json.dumps({"losses": losses, "world": dist.get_world_size()}))
    ps.destroy_model_parallel()
    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
