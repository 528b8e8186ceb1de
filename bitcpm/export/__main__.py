"""`python -m bitcpm.export {hf,packed,gguf} RUN_OR_CHECKPOINT OUT [options]`.

Every export prints its progress and verifies what it wrote (re-read, shapes, a forward against bitcpm's).
A bad argument (a missing or damaged source, a full-precision run where trits are packed, an output that is a
directory) is one line on stderr and exit status 2, before anything is written; a failed verification exits 1.
An export that fails part-way removes what it wrote.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from bitcpm.config.arguments import OUTPUT_DIR, OUTPUT_FILE, OneLineParser, fail
from bitcpm.export.inputs import HF_CONFIG_DIR, RUN, TERNARY_RUN

PROG = "python -m bitcpm.export"


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = OneLineParser(prog=PROG, description="export a trained bitcpm model")
    sub = p.add_subparsers(dest="format", required=True)
    hf = sub.add_parser("hf", help="Hugging Face config.json + safetensors + tokenizer (fake-quantized)")
    hf.add_argument("source", type=RUN, help="run directory or checkpoint directory")
    hf.add_argument("out", type=OUTPUT_DIR, help="output directory")
    hf.add_argument("--layout", choices=["llama", "minicpm"], default="llama")
    hf.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    packed = sub.add_parser("packed", help="trits packed 2-bit or 1.6-bit (5 per byte) + per-group scales")
    packed.add_argument("source", type=TERNARY_RUN, help="ternary run directory or checkpoint directory")
    packed.add_argument("out", type=OUTPUT_FILE, help="output .safetensors file")
    packed.add_argument("--bits", choices=["2", "1.6"], default="1.6")
    packed.add_argument("--scale-dtype", choices=["bf16", "fp32"], default="bf16")
    gguf = sub.add_parser("gguf", help="GGUF for llama.cpp: TQ2_0 projections, f16/f32 embeddings and head")
    gguf.add_argument("source", type=TERNARY_RUN, help="ternary run directory or checkpoint directory")
    gguf.add_argument("out", type=OUTPUT_FILE, help="output .gguf file")
    gguf.add_argument(
        "--lossy", action="store_true", help="convert group sizes TQ2_0 cannot hold exactly, printing the error"
    )
    gguf.add_argument("--embed-type", choices=["f16", "f32"], default="f16", help="embedding and head precision")
    overrides = sub.add_parser("overrides", help="print the model.* overrides that match a Hugging Face checkpoint")
    overrides.add_argument("source", type=HF_CONFIG_DIR, help="Hugging Face checkpoint directory (config.json)")
    return p


def _hf(args: argparse.Namespace, source) -> int:
    from bitcpm.export.hf import verify_hf, write_hf

    write_hf(source, args.out, args.layout, args.dtype)
    check = verify_hf(args.out, source)
    print(f"export hf: verified {args.out}: {check.line()}")
    # fp32 must reproduce bitcpm's logits; bf16 rounds every scale (2^-9 relative), judged against the logit scale.
    limit = 1e-3 if args.dtype == "fp32" else 0.05 * max(1.0, check.max_abs_logit)
    if check.max_abs_diff >= limit:
        print(f"export hf: verification FAILED: the difference exceeds {limit:.2e}", file=sys.stderr)
        return 1
    return 0


def _packed(args: argparse.Namespace, source) -> int:
    from bitcpm.export.packed import verify_packed, write_packed

    report = write_packed(source, args.out, args.bits, args.scale_dtype)
    print(f"export packed: {report}")
    verify_packed(args.out, source)
    dtype = args.scale_dtype
    print(f"export packed: verified {args.out}: unpacking gives the fake-quantized {dtype} export bit for bit")
    return 0


def _gguf(args: argparse.Namespace, source) -> int:
    from bitcpm.export.gguf_export import verify_gguf, write_gguf

    write_gguf(source, args.out, lossy=args.lossy, embed_type=args.embed_type)
    print(f"export gguf: verified {args.out}: {verify_gguf(args.out, source, args.lossy, args.embed_type)}")
    return 0


def _entries(out: Path) -> tuple[Path | None, set[Path]]:
    """Before the export: the top-most directory or file it will create (None when the output exists), and what
    an existing output directory holds."""
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    return created, set(out.iterdir()) if out.is_dir() else set()


def _remove_new(out: Path, before: tuple[Path | None, set[Path]]) -> None:
    """Remove what a failed export wrote: what it created, or the entries it added to an existing directory."""
    created, held = before
    if created is not None:
        shutil.rmtree(created) if created.is_dir() else created.unlink(missing_ok=True)
    elif out.is_dir():
        for path in out.iterdir():
            if path not in held:
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bitcpm.export` and `bitcpm-export`."""
    args = parser().parse_args(argv)
    if args.format == "overrides":
        from bitcpm.models.minicpm.hf_checkpoint import read_config
        from bitcpm.models.minicpm.hf_config import model_overrides

        try:
            print(" ".join(model_overrides(read_config(args.source))))
        except (OSError, KeyError, ValueError) as exc:
            return fail("bitcpm.export", f"{args.source}: {exc}")
        return 0
    if args.format == "gguf":
        from bitcpm.export.gguf_export import check_gguf_lossless
        from bitcpm.export.inputs import run_job

        try:  # the run's shapes and group size, before its weights are read
            check_gguf_lossless(run_job(args.source)[1], lossy=args.lossy)
        except ValueError as exc:
            return fail("bitcpm.export", exc)
    from bitcpm.export.source import open_source

    try:
        source = open_source(args.source)
    except ValueError as exc:  # ConfigError is a ValueError: a damaged checkpoint, named by its file
        return fail("bitcpm.export", exc)
    before = _entries(args.out)
    try:
        return {"hf": _hf, "packed": _packed, "gguf": _gguf}[args.format](args, source)
    except BaseException:
        _remove_new(args.out, before)
        raise


if __name__ == "__main__":
    sys.exit(main())
