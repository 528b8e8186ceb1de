"""What the checkpoint manifest costs a save: the debug model's whole save against its manifest, and hash throughput.

    OMP_NUM_THREADS=1 python tests/perf/manifest_cost.py [--repeats 5] [--mib 256]
    OMP_NUM_THREADS=2 python tests/perf/manifest_cost.py --model 1b --repeats 2 --no-adam-step   # the 1B plan

1. Saves the debug model (experiment=smoke, after one optimizer step so the Adam moments exist) through
   save_checkpoint, which hashes every file into MANIFEST.json before the marker, and times write_manifest
   alone on the same files. Medians over the repeats.
2. Hashes a freshly written file of --mib MiB (in the page cache, as a save's files are) with sha256 and
   blake2b, one thread; then the same bytes as 8 files over the manifest's thread pool. The 1B extrapolation
   divides the 1B plan's checkpoint bytes (its parameter count times the debug checkpoint's bytes per parameter)
   by the measured rate.
3. `--model 1b` measures the same save on the 1B preset itself (fp32, one process); `--no-adam-step` leaves the
   Adam moments unallocated (weights only, 4 bytes/param) where memory cannot hold weights, gradient buffer and
   moments (1B: 22 GB), and skips the hash-rate part.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def debug_save(repeats: int, work: Path, model: str = "debug", adam_step: bool = True) -> tuple[int, int, float, float]:
    """(checkpoint bytes, parameters, median whole-save seconds, median manifest seconds) of a model preset."""
    from bitcpm.backends import get_backend
    from bitcpm.config.checkpoint_manifest import write_manifest
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.training import checkpoint as ckpt
    from bitcpm.training.build import build_engine
    from bitcpm.training.checkpoint_progress import bytes_under
    from bitcpm.training.distributed import init_distributed, shutdown_distributed

    job = compose_job(CommandLine(), ["experiment=smoke", f"model={model}"], check_rules=False)
    backend = get_backend("cpu")
    backend.prepare()
    init_distributed(backend, "gloo", 1, 1, 1, seed=0)
    try:
        engine = build_engine(job, 1, job.optim.lr)
        # One optimizer step on a made-up gradient, so that Adam's moments exist and are saved, as in training.
        for chunk in engine.model if adam_step else []:
            for p in chunk.parameters():
                if getattr(p, "main_grad", None) is not None:
                    p.main_grad.normal_(0, 1e-3)
        if adam_step:
            engine.optimizer.step()
        params = sum(p.numel() for chunk in engine.model for p in chunk.parameters())
        step = iter(range(1, 10_000))
        save_s = _median_s(
            lambda: ckpt.save_checkpoint(work, next(step), engine.model, engine.optimizer, {"step": 0}, keep=1),
            repeats,
        )
        final = ckpt.complete_checkpoints(work)[-1]
        manifest_s = _median_s(lambda: write_manifest(final), repeats)
        return bytes_under(final), params, save_s, manifest_s
    finally:
        shutdown_distributed()


def hash_rates(mib: int, repeats: int, work: Path) -> dict[str, float]:
    """MB/s (10^6 bytes) of sha256 and blake2b over page-cached data: one file, one thread; 8 files, the pool."""
    from bitcpm.config.checkpoint_manifest import _digests, file_digest

    big = work / "big.bin"
    block = os.urandom(1 << 20)
    with open(big, "wb") as f:
        for _ in range(mib):
            f.write(block)
    parts = []
    for i in range(8):
        part = work / f"part{i}.bin"
        with open(part, "wb") as f:
            for _ in range(mib // 8):
                f.write(block)
        parts.append(part.name)
    rates = {}
    total = mib * (1 << 20) / 1e6
    for algorithm in ("sha256", "blake2b"):
        file_digest(big, algorithm)  # warm: the file is in the page cache, as a save's just-written files are
        rates[f"{algorithm} 1 thread"] = total / _median_s(lambda a=algorithm: file_digest(big, a), repeats)
        threads = min(8, os.cpu_count() or 1)
        rates[f"{algorithm} {threads} threads, 8 files"] = total / _median_s(
            lambda a=algorithm: _digests(work, parts, a, None), repeats
        )
    return rates


def main() -> None:
    """Print both measurements and the 1B extrapolation (or, with --model, that model's save)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--model", default="debug", help="model preset whose save is measured")
    ap.add_argument("--no-adam-step", dest="adam_step", action="store_false", help="weights only (no Adam moments)")
    args = ap.parse_args()
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.plan.counts import count_params

    with tempfile.TemporaryDirectory(prefix="manifest_cost_") as tmp:
        nbytes, params, save_s, manifest_s = debug_save(args.repeats, Path(tmp) / "run", args.model, args.adam_step)
        print(
            f"{args.model} model: checkpoint {nbytes / 1e6:.1f} MB ({nbytes / params:.2f} bytes/param), "
            f"save_checkpoint {save_s * 1e3:.0f} ms median, of which the manifest {manifest_s * 1e3:.0f} ms "
            f"({100 * manifest_s / save_s:.1f} %)"
        )
        if args.model != "debug":
            return
        rates = hash_rates(args.mib, args.repeats, Path(tmp))
    for name, rate in rates.items():
        print(f"{name}: {rate:.0f} MB/s")
    one_b = count_params(compose_job(CommandLine(), ["model=1b"], check_rules=False).model).total * nbytes / params
    sha1 = rates["sha256 1 thread"]
    print(f"1B plan: ~{one_b / 1e9:.1f} GB per checkpoint; sha256 one thread {one_b / 1e6 / sha1:.0f} s")


if __name__ == "__main__":
    main()
