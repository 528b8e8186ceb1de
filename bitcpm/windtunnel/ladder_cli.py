"""The scaling ladder's sub-commands of `python -m bitcpm.windtunnel`: `ladder` (train it) and `predict` (fit it)."""

from __future__ import annotations

import argparse

from bitcpm.config.arguments import DIRECTORY, INT_LIST, OUTPUT_DIR, OVERRIDES, number, text
from bitcpm.config.ranges import AT_LEAST_1, NON_NEGATIVE, Range


def add_ladder(sub) -> None:
    """The `ladder` sub-command's arguments."""
    p = sub.add_parser("ladder", help="train a scaling ladder: sizes x precisions x token budgets (WSD branches)")
    name = "the ladder's name (its directory and MLflow study)"
    p.add_argument("--name", type=text("ladder name"), default="ladder", help=name)
    widths = "hidden sizes of the model family, comma-separated"
    p.add_argument("--widths", type=INT_LIST, default=(64, 128, 192, 256), help=widths)
    precisions = "quant presets, comma-separated"
    p.add_argument("--precisions", type=text("list of quant presets"), default="none,ternary_g64", help=precisions)
    steps = "token budgets as each branch's steps, comma-separated"
    p.add_argument("--steps", type=INT_LIST, default=(100, 200, 400), help=steps)
    decay = "each branch's share of steps in its decay"
    p.add_argument("--decay-fraction", type=number(float, Range(0, 1, True, True)), default=0.2, help=decay)
    head = "head size, the same at every width"
    p.add_argument("--head-dim", type=number(int, AT_LEAST_1), default=16, help=head)
    config_dir = "your config directory (presets beside conf/)"
    p.add_argument("--config-dir", type=DIRECTORY, default=None, help=config_dir)
    p.add_argument("--dry-run", action="store_true", help="plan every run and say which would train")
    family = "Hydra overrides of the family (launcher=slurm, optim.lr=...)"
    p.add_argument("overrides", nargs="*", type=OVERRIDES, help=family)


def run_ladder_args(a: argparse.Namespace) -> int:
    """Run `ladder`."""
    from bitcpm.windtunnel.ladder import FAMILY, LadderSpec
    from bitcpm.windtunnel.ladder_command import run_ladder

    spec = LadderSpec(
        a.name,
        tuple(a.widths),
        tuple(v.strip() for v in a.precisions.split(",") if v.strip()),
        tuple(a.steps),
        a.decay_fraction,
        a.head_dim,
        (*FAMILY, *a.overrides),
    )
    config_dirs = [str(a.config_dir.resolve())] if a.config_dir else []
    return run_ladder(spec, config_dirs, a.dry_run)


def add_predict(sub) -> None:
    """The `predict` sub-command's arguments."""
    p = sub.add_parser("predict", help="fit a ladder's L(N, D) per precision and predict a target's loss and gap")
    p.add_argument("ladder", type=text("ladder name"), help="the ladder's name (ladder --name)")
    target = "the target's hidden size (the ladder's model family)"
    p.add_argument("--target", type=number(int, AT_LEAST_1), required=True, help=target)
    tokens = "the target's training tokens (rounded up to steps)"
    p.add_argument("--tokens", type=number(int, AT_LEAST_1), default=None, help=tokens)
    p.add_argument("--steps", type=number(int, AT_LEAST_1), default=None, help="or its training steps")
    experiment = "write conf/experiment/NAME.yaml: the target, carrying it"
    p.add_argument("--experiment", type=text("experiment name"), default=None, help=experiment)
    config_dir = "your config directory (default: the shipped conf/)"
    p.add_argument("--config-dir", type=OUTPUT_DIR, default=None, help=config_dir)
    p.add_argument("--force", action="store_true", help="overwrite an existing experiment of that name")
    out = "report and PNGs (default: the ladder's directory)"
    p.add_argument("--out", type=OUTPUT_DIR, default=None, help=out)
    replicates = "bootstrap replicates behind the intervals"
    p.add_argument("--replicates", type=number(int, NON_NEGATIVE), default=1000, help=replicates)
    store = "overrides the ladder ran with (train.output_root, tracking.uri)"
    p.add_argument("overrides", nargs="*", type=OVERRIDES, help=store)


def run_predict_args(a: argparse.Namespace) -> int:
    """Run `predict`."""
    from bitcpm.windtunnel.ladder_predict import PredictArgs, run_predict

    config_dir = a.config_dir.resolve() if a.config_dir else None
    args = PredictArgs(
        a.ladder, a.target, a.tokens, a.steps, a.experiment, config_dir, a.force, a.out, a.replicates, list(a.overrides)
    )
    return run_predict(args)
