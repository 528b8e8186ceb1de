"""Command line of the wind tunnel: one sub-command per job, bad arguments exit 2 with one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bitcpm.windtunnel.ladder_cli import add_ladder, add_predict, run_ladder_args, run_predict_args
from bitcpm.windtunnel.widths import parse_widths


def _coordcheck(sub) -> None:
    p = sub.add_parser("coordcheck", help="activation / update size against width (muP coordinate check)")
    p.add_argument("--widths", default="64,128,256,512", help="hidden sizes, comma-separated (at least 4)")
    # The logits need a few steps to leave their vanishing init.
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per width")
    p.add_argument("--lr", type=float, default=1e-2, help="base learning rate (constant)")
    p.add_argument("--batch", type=int, default=1, help="sequences in the one training batch")
    p.add_argument("--seq-length", type=int, default=32, help="tokens per sequence")
    p.add_argument("--head-dim", type=int, default=32, help="head size kept fixed across widths")
    p.add_argument("--tolerance", type=float, default=0.3, help="largest |slope| of log size against log width")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/windtunnel/coordcheck"), help="PNG and JSON go here")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the base job (model=..., quant=..., ...)")


def _run_coordcheck(a: argparse.Namespace) -> int:
    from bitcpm.windtunnel.coordcheck_command import CoordCheckArgs, run_coord_check

    widths = parse_widths(a.widths)
    if len(widths) < 4:
        raise ValueError(f"--widths={a.widths}: the coord check needs at least 4 widths")
    if a.steps < 1:
        raise ValueError(f"--steps={a.steps}: expected at least 1")
    args = CoordCheckArgs(
        widths, a.steps, a.lr, a.batch, a.seq_length, a.head_dim, a.tolerance, a.seed, a.out, list(a.overrides)
    )
    return run_coord_check(args)


MOVED_SEARCH = (
    "`windtunnel search` is now a Hydra sweeper: python -m bitcpm.train -m hydra/sweeper=optuna "
    "hydra.sweeper.n_trials=N 'optim.lr=tag(log,interval(1e-3,1e-1))' ... (README: Optuna studies)"
)


def _search(sub) -> None:
    p = sub.add_parser("search", help="moved: python -m bitcpm.train -m hydra/sweeper=optuna ...")
    p.add_argument("rest", nargs=argparse.REMAINDER)


def _run_search(a: argparse.Namespace) -> int:
    raise ValueError(MOVED_SEARCH)


def _report(sub) -> None:
    p = sub.add_parser("report", help="read a study back from MLflow: loss against lr per width, tables")
    p.add_argument("study", help="study name (the bitcpm.study tag of its parent run)")
    p.add_argument("--out", type=Path, default=Path("outputs/windtunnel/reports"), help="PNG and markdown go here")
    p.add_argument("overrides", nargs="*", help="tracking overrides naming the store (tracking.uri=...)")


def _run_report(a: argparse.Namespace) -> int:
    from bitcpm.windtunnel.report_command import run_report

    return run_report(a.study, list(a.overrides), a.out)


def _transfer(sub) -> None:
    p = sub.add_parser("transfer", help="write a study's best base hyperparameters as conf/experiment/NAME.yaml")
    p.add_argument("study", help="study name (the bitcpm.study tag of its parent run)")
    p.add_argument("--target", required=True, help="model preset to train with them (8b, 1b, ...)")
    p.add_argument("--name", required=True, help="experiment name: python -m bitcpm.train experiment=NAME")
    p.add_argument("--config-dir", type=Path, default=None, help="your config directory (default: the shipped conf/)")
    p.add_argument("--force", action="store_true", help="overwrite an existing experiment of that name")
    p.add_argument("overrides", nargs="*", help="tracking overrides naming the store (tracking.uri=...)")


def _run_transfer(a: argparse.Namespace) -> int:
    from bitcpm.windtunnel.transfer import run_transfer

    config_dir = a.config_dir.resolve() if a.config_dir else None
    return run_transfer(a.study, a.target, a.name, config_dir, a.force, list(a.overrides))


COMMANDS = {
    "coordcheck": (_coordcheck, _run_coordcheck),
    "search": (_search, _run_search),
    "report": (_report, _run_report),
    "transfer": (_transfer, _run_transfer),
    "ladder": (add_ladder, run_ladder_args),
    "predict": (add_predict, run_predict_args),
}


def parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    p = argparse.ArgumentParser(prog="python -m bitcpm.windtunnel", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse, run the sub-command; configuration errors print one line and return 2."""
    from bitcpm.frontend.compose import one_line_error

    p = parser()
    # Overrides may follow options (`search S --param a=1,2 model=x`): argparse leaves them unknown.
    args, extra = p.parse_known_args(argv)
    flags = [e for e in extra if e.startswith("-")]
    if flags:
        p.error(f"unrecognized arguments: {' '.join(flags)}")
    if extra and not hasattr(args, "overrides"):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return COMMANDS[args.command][1](args)
    except Exception as exc:  # one line for the user, whatever layer raised it
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from bitcpm.config.validate import ConfigError

        if isinstance(exc, ValueError | ConfigError | HydraException | OmegaConfBaseException):
            print(f"bitcpm.windtunnel: error: {one_line_error(exc)}", file=sys.stderr)
            return 2
        raise
