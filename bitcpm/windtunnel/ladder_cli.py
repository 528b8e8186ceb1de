"""The scaling ladder's sub-commands of `python -m bitcpm.windtunnel`: `ladder` (train it) and `predict` (fit it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bitcpm.windtunnel.widths import parse_widths


def _numbers(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag}={text}: expected comma-separated integers") from None
    if not values:
        raise ValueError(f"{flag}={text}: expected at least one value")
    return values


def add_ladder(sub) -> None:
    """The `ladder` sub-command's arguments."""
    p = sub.add_parser("ladder", help="train a scaling ladder: sizes x precisions x token budgets (WSD branches)")
    p.add_argument("--name", default="ladder", help="the ladder's name (its directory and MLflow study)")
    p.add_argument("--widths", default="64,128,192,256", help="hidden sizes of the model family, comma-separated")
    p.add_argument("--precisions", default="none,ternary_g64", help="quant presets, comma-separated")
    p.add_argument("--steps", default="100,200,400", help="token budgets as each branch's steps, comma-separated")
    p.add_argument("--decay-fraction", type=float, default=0.2, help="each branch's share of steps in its decay")
    p.add_argument("--head-dim", type=int, default=16, help="head size, the same at every width")
    p.add_argument("--config-dir", type=Path, default=None, help="your config directory (presets beside conf/)")
    p.add_argument("--dry-run", action="store_true", help="plan every run and say which would train")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the family (launcher=slurm, optim.lr=...)")


def run_ladder_args(a: argparse.Namespace) -> int:
    """Run `ladder`."""
    from bitcpm.windtunnel.ladder import FAMILY, LadderSpec
    from bitcpm.windtunnel.ladder_command import run_ladder

    spec = LadderSpec(
        a.name,
        tuple(parse_widths(a.widths)),
        tuple(v.strip() for v in a.precisions.split(",") if v.strip()),
        _numbers(a.steps, "--steps"),
        a.decay_fraction,
        a.head_dim,
        (*FAMILY, *a.overrides),
    )
    config_dirs = [str(a.config_dir.resolve())] if a.config_dir else []
    return run_ladder(spec, config_dirs, a.dry_run)


def add_predict(sub) -> None:
    """The `predict` sub-command's arguments."""
    p = sub.add_parser("predict", help="fit a ladder's L(N, D) per precision and predict a target's loss and gap")
    p.add_argument("ladder", help="the ladder's name (ladder --name)")
    p.add_argument("--target", type=int, required=True, help="the target's hidden size (the ladder's model family)")
    p.add_argument("--tokens", type=int, default=None, help="the target's training tokens (rounded up to steps)")
    p.add_argument("--steps", type=int, default=None, help="or its training steps")
    p.add_argument("--experiment", default=None, help="write conf/experiment/NAME.yaml: the target, carrying it")
    p.add_argument("--config-dir", type=Path, default=None, help="your config directory (default: the shipped conf/)")
    p.add_argument("--force", action="store_true", help="overwrite an existing experiment of that name")
    p.add_argument("--out", type=Path, default=None, help="report and PNGs (default: the ladder's directory)")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates behind the intervals")
    p.add_argument("overrides", nargs="*", help="overrides the ladder ran with (train.output_root, tracking.uri)")


def run_predict_args(a: argparse.Namespace) -> int:
    """Run `predict`."""
    from bitcpm.windtunnel.ladder_predict import PredictArgs, run_predict

    if a.replicates < 0:
        raise ValueError(f"--replicates={a.replicates}: expected at least 0")
    config_dir = a.config_dir.resolve() if a.config_dir else None
    args = PredictArgs(
        a.ladder, a.target, a.tokens, a.steps, a.experiment, config_dir, a.force, a.out, a.replicates, list(a.overrides)
    )
    return run_predict(args)
