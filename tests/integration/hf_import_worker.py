"""One rank of the HF import test (run under torchrun): compose + validate the job, load, forward, gather.

Usage: torchrun --nproc-per-node=N hf_import_worker.py OUT.pt TOKENS.pt override...
Rank 0 saves the full-vocabulary logits of the imported model for TOKENS.
"""

from __future__ import annotations

import sys

import torch


def main() -> None:
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    from bitcpm.backends import get_backend
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.models import build_model
    from bitcpm.models.minicpm.hf_checkpoint import load_hf_weights
    from bitcpm.training.distributed import init_distributed, shutdown_distributed
    from bitcpm.training.steps import causal_mask

    out, tokens_file, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    job = compose_job(CommandLine(), overrides)  # runs the preflight of stage.init_from
    backend = get_backend("cpu")
    backend.prepare()
    info = init_distributed(backend, "gloo", job.parallel.tp, 1, 1, seed=0)
    model = build_model(job.model, seq_length=job.train.seq_length, tp=job.parallel.tp).eval()
    load_hf_weights([model], job.stage.init_from, job.model)
    tokens = torch.load(tokens_file)
    b, s = tokens.shape
    with torch.no_grad():
        logits = model(
            input_ids=tokens,
            position_ids=torch.arange(s)[None].expand(b, -1),
            attention_mask=causal_mask(s, tokens.device),
        )
        full = gather_from_tensor_model_parallel_region(logits)
    if info.is_main:
        torch.save(full.float(), out)
    shutdown_distributed()


if __name__ == "__main__":
    main()
