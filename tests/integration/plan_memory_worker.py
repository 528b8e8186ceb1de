"""One rank of the planner-vs-megatron memory check: `torchrun ... plan_memory_worker.py OUT.json key=value ...`."""

from __future__ import annotations

import json
import sys


def main(out: str, overrides: list[str]) -> None:
    import torch.distributed as dist

    from bitcpm.backends import get_backend
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.training.distributed import init_distributed, shutdown_distributed
    from tests.support.megatron_memory import build_and_count

    job = compose_job(CommandLine(), overrides)
    p = job.parallel
    backend = get_backend("cpu")
    backend.prepare()
    info = init_distributed(backend, "gloo", p.tp, p.pp, p.cp, job.train.seed, p.virtual_pp)
    try:
        counts = build_and_count(job, info.world_size)
        gathered: list[dict | None] = [None] * info.world_size
        dist.all_gather_object(gathered, counts)
        if info.is_main:
            with open(out, "w") as handle:
                json.dump(gathered, handle)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
