"""Command line of the wind tunnel: one sub-command per job; every argument declares its kind (checked when the
command line is read, before any work), and a bad one exits 2 with one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bitcpm.config.arguments import OUTPUT_DIR, OVERRIDES, Kind, OneLineParser, number, text
from bitcpm.config.ranges import AT_LEAST_1, POSITIVE, SEED
from bitcpm.windtunnel.ladder_cli import add_ladder, add_predict, run_ladder_args, run_predict_args
from bitcpm.windtunnel.qat_findings import FINDINGS
from bitcpm.windtunnel.widths import parse_widths


def _coord_widths(value: str) -> list[int]:
    widths = parse_widths(value)
    if len(widths) < 4:
        raise ValueError(f"{value}: the coord check needs at least 4 widths")
    return widths


WIDTHS = Kind("widths", _coord_widths)
"""Hidden sizes, comma-separated."""
STORE_OVERRIDES = Kind("store_overrides", str)
"""Tracking overrides naming an MLflow store that holds a study (it must exist: it is read, never created)."""


def _coordcheck(sub) -> None:
    p = sub.add_parser("coordcheck", help="activation / update size against width (muP coordinate check)")
    # 16x, the span of microsoft/mup's examples (2^7-2^11), at a CPU's cost; models narrower than 64 sit in the
    # finite-width transient of the update effects (README, "Coord check").
    widths = [64, 128, 256, 512, 1024]
    p.add_argument("--widths", type=WIDTHS, default=widths, help="hidden sizes, comma-separated (>= 4, >= 16x apart)")
    seeds = "seeds per width (init and batch); the fit uses their mean"
    p.add_argument("--seeds", type=number(int, AT_LEAST_1), default=3, help=seeds)
    # The logits need a few steps to leave their vanishing init.
    p.add_argument("--steps", type=number(int, AT_LEAST_1), default=8, help="optimizer steps per width")
    p.add_argument("--lr", type=number(float, POSITIVE), default=1e-2, help="base learning rate (constant)")
    p.add_argument("--batch", type=number(int, AT_LEAST_1), default=1, help="sequences in the one training batch")
    p.add_argument("--seq-length", type=number(int, AT_LEAST_1), default=32, help="tokens per sequence")
    p.add_argument("--head-dim", type=number(int, AT_LEAST_1), default=32, help="head size kept fixed across widths")
    tolerance = "largest |slope| of log size against log width"
    p.add_argument("--tolerance", type=number(float, POSITIVE), default=0.3, help=tolerance)
    p.add_argument("--seed", type=number(int, SEED), default=0, help="first seed (then seed+1, ...)")
    out = Path("outputs/windtunnel/coordcheck")
    p.add_argument("--out", type=OUTPUT_DIR, default=out, help="PNG and JSON go here")
    p.add_argument("overrides", nargs="*", type=OVERRIDES, help="Hydra overrides of the base job (model=..., ...)")


def _run_coordcheck(a: argparse.Namespace) -> int:
    from bitcpm.windtunnel.coordcheck_command import CoordCheckArgs, run_coord_check

    args = CoordCheckArgs(
        a.widths,
        a.steps,
        a.lr,
        a.batch,
        a.seq_length,
        a.head_dim,
        a.tolerance,
        a.seed,
        a.out,
        list(a.overrides),
        seeds=a.seeds,
    )  # refuses a span under 16x (ValueError: one line, exit 2)
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
    p.add_argument("study", type=text("study name"), help="study name (the bitcpm.study tag of its parent run)")
    out = Path("outputs/windtunnel/reports")
    p.add_argument("--out", type=OUTPUT_DIR, default=out, help="PNG and markdown go here")
    p.add_argument("overrides", nargs="*", type=STORE_OVERRIDES, help="tracking overrides naming the store")


def _run_report(a: argparse.Namespace) -> int:
    from bitcpm.windtunnel.report_command import run_report

    return run_report(a.study, list(a.overrides), a.out)


def _findings(sub) -> None:
    p = sub.add_parser("findings", help="a QAT-findings study's arms over seeds and the verdict on BitCPM's claim")
    p.add_argument("study", type=text("study name"), help="study name (the bitcpm.study tag of its parent run)")
    which = "the claim to judge (default: the study's name)"
    p.add_argument("--finding", choices=list(FINDINGS), default=None, help=which)
    out = Path("outputs/windtunnel/reports")
    p.add_argument("--out", type=OUTPUT_DIR, default=out, help="PNG and markdown go here")
    p.add_argument("overrides", nargs="*", type=STORE_OVERRIDES, help="tracking overrides naming the store")


def _run_findings(a: argparse.Namespace) -> int:
    from bitcpm.windtunnel.findings_command import run_findings

    return run_findings(a.study, a.finding, list(a.overrides), a.out)


def _transfer(sub) -> None:
    p = sub.add_parser("transfer", help="write a study's best base hyperparameters as conf/experiment/NAME.yaml")
    p.add_argument("study", type=text("study name"), help="study name (the bitcpm.study tag of its parent run)")
    target = "model preset to train with them (8b, 1b, ...)"
    p.add_argument("--target", type=text("model preset name"), required=True, help=target)
    name = "experiment name: python -m bitcpm.train experiment=NAME"
    p.add_argument("--name", type=text("experiment name"), required=True, help=name)
    config_dir = "your config directory, created if need be (default: the shipped conf/)"
    p.add_argument("--config-dir", type=OUTPUT_DIR, default=None, help=config_dir)
    p.add_argument("--force", action="store_true", help="overwrite an existing experiment of that name")
    p.add_argument("overrides", nargs="*", type=STORE_OVERRIDES, help="tracking overrides naming the store")


def _run_transfer(a: argparse.Namespace) -> int:
    from bitcpm.windtunnel.transfer import run_transfer

    config_dir = Path(a.config_dir).resolve() if a.config_dir else None
    return run_transfer(a.study, a.target, a.name, config_dir, a.force, list(a.overrides))


COMMANDS = {
    "coordcheck": (_coordcheck, _run_coordcheck),
    "search": (_search, _run_search),
    "report": (_report, _run_report),
    "findings": (_findings, _run_findings),
    "transfer": (_transfer, _run_transfer),
    "ladder": (add_ladder, run_ladder_args),
    "predict": (add_predict, run_predict_args),
}


def parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    p = OneLineParser(prog="python -m bitcpm.windtunnel", description=__doc__)
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
