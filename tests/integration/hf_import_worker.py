"""One rank of the HF import test (run under torchrun): compose + validate the job, load, forward, gather.

Usage: torchrun --nproc-per-node=N hf_import_worker.py OUT.pt TOKENS.pt override...
Rank 0 saves the full-vocabulary logits of the imported model for TOKENS.
With OUT named params_*.pt (pipeline parallel): every rank saves {parameter name: (global layer, tensor)} of
its chunks, built by the engine's builder, to OUT with its rank appended.
"""

from __future__ import annotations

import sys

import torch


def main() -> None:
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    from bitcpm.backends import get_backend
    from bitcpm.export.weights import megatron_logits
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.models import build_model
    from bitcpm.models.minicpm.hf_checkpoint import load_hf_weights
    from bitcpm.training.distributed import init_distributed, shutdown_distributed

    out, tokens_file, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    job = compose_job(CommandLine(), overrides)  # runs the preflight of stage.init_from
    backend = get_backend("cpu")
    backend.prepare()
    info = init_distributed(backend, "gloo", job.parallel.tp, job.parallel.pp, 1, seed=0)
    if "params_" in out:
        save_params(job, info, out)
        shutdown_distributed()
        return
    model = build_model(job.model, seq_length=job.train.seq_length, tp=job.parallel.tp).eval()
    load_hf_weights([model], job.stage.init_from, job.model)
    tokens = torch.load(tokens_file)
    with torch.no_grad():
        full = gather_from_tensor_model_parallel_region(megatron_logits(model, tokens))
    if info.is_main:
        torch.save(full, out)
    shutdown_distributed()


def save_params(job, info, out: str) -> None:
    """Load into the engine's pipeline chunks; save each parameter with its global layer index."""
    from bitcpm.models.minicpm.hf_checkpoint import load_hf_weights
    from bitcpm.training.build import build_chunks

    p = job.parallel
    chunks, _, _ = build_chunks(job.model, job.quant, p, "float32", job.train.seq_length, 0)
    load_hf_weights(chunks, job.stage.init_from, job.model)
    saved = {}
    for chunk in chunks:
        for name, param in chunk.named_parameters():
            layer = None
            if name.startswith("decoder.layers."):
                layer = chunk.decoder.layers[int(name.split(".")[2])].layer_number - 1
            saved[name if layer is None else f"{layer}:{name.split('.', 3)[3]}"] = param.detach().clone()
    torch.save(saved, f"{out}.{info.rank}")


if __name__ == "__main__":
    main()
