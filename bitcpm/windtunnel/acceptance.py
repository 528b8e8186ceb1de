"""The lr x width acceptance run (not CI): does the optimal lr stay put across widths with muP and move with sp?

    python -m bitcpm.windtunnel.acceptance              # the real one: about 30 minutes on 2 cores
    python -m bitcpm.windtunnel.acceptance --smoke      # a minute-scale check that the pipeline works

The shipped studies sweep=lr_width (muP) and sweep=lr_width_sp (sp: muP without its width rules, equal at the
base width) as Hydra multiruns on the built-in corpus with the 512-token tokenizer: 4 widths spanning 8x at a fixed
depth and head size, each side's own lr grid 2x apart, 3 seeds per point. Then the report of each, the fitted
optimum per width and the slope of log2 lr* against log2 width, each with a bootstrap interval over seeds, one
side-by-side plot (also on both studies' MLflow runs) and the verdict against the criteria fixed below,
with its numbers, whatever it is.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

from bitcpm.windtunnel.steps import run_step

_run = partial(run_step, "acceptance")

# The pass criteria, fixed before the first full run (issue: "not tuned afterwards").
MUP_MAX_ABS_SLOPE = 0.25
"""muP: |slope of log2 lr* per doubling of width| at most this."""
SP_MAX_SLOPE = -0.5
"""sp: the slope at most this (the optimum falls by at least 2^-0.5 per doubling)."""

SMOKE = [
    "model.hidden_size=32,64",
    "optim.lr=1e-2,4e-2",
    "train.seed=0",
    "train.steps=4",
    "train.eval_interval=2",
    "train.seq_length=32",
    "optim.warmup_steps=1",
]
STUDIES = {"mup": "lr_width", "sp": "lr_width_sp"}
EXPERIMENT = "windtunnel"  # the studies' tracking.experiment


def verdict(trials: dict[str, list]) -> tuple[list[str], bool]:
    """Side-by-side optimum per width, each side's slope with its interval, and whether the criteria hold."""
    from bitcpm.windtunnel.lr_curves import best_mean_lr, seed_curves, series_fits

    fits = {par: series_fits(t)[par] for par, t in trials.items()}
    widths = sorted(fits["mup"][0])
    lines = [f"{'width':>6s} {'mup optimum lr [95%]':>28s} {'sp optimum lr [95%]':>28s}"]
    for w in widths:
        cells = [fits[p][0][w].text() if w in fits[p][0] else "n/a" for p in ("mup", "sp")]
        lines.append(f"{w:>6d} {cells[0]:>28s} {cells[1]:>28s}")
    for par, t in trials.items():  # an optimum at the grid's edge is not bracketed: the fit extrapolates
        for (_, width), by_lr in seed_curves(t).items():
            best, at_edge = best_mean_lr(by_lr)
            if at_edge:
                lines.append(f"{par}: width {width}: the best lr {best:g} is at the grid's edge (not bracketed)")
    mup, sp = fits["mup"][1], fits["sp"][1]
    mup_ok = mup is not None and abs(mup.value) <= MUP_MAX_ABS_SLOPE
    sp_ok = sp is not None and sp.value <= SP_MAX_SLOPE
    mup_text = mup.text(".2f") if mup else "n/a"
    sp_text = sp.text(".2f") if sp else "n/a"
    lines.append(
        f"mup: slope of log2 lr* per doubling of width {mup_text} "
        f"(pass: within +-{MUP_MAX_ABS_SLOPE}): {'yes' if mup_ok else 'NO'}"
    )
    lines.append(f"sp: slope {sp_text} (pass: <= {SP_MAX_SLOPE}): {'yes' if sp_ok else 'NO'}")
    if mup_ok and sp_ok:
        lines.append("acceptance: muP keeps the optimal lr across widths; sp moves it.")
    else:
        lines.append("acceptance: this scale does not show muP transfer against sp as expected (numbers above).")
    return lines, mup_ok and sp_ok


def main(argv: list[str] | None = None) -> int:
    """Run both studies as Hydra multiruns, report them, print the verdict (exit 0 whatever it is)."""
    p = argparse.ArgumentParser(prog="python -m bitcpm.windtunnel.acceptance", description=__doc__)
    p.add_argument("--root", type=Path, default=Path("outputs/windtunnel/lr_width"), help="store, runs, reports")
    p.add_argument("--smoke", action="store_true", help="2 widths, 2 lrs, 1 seed, 4 steps: checks the pipeline")
    p.add_argument("--parallel", type=int, default=2, help="trials at once (1 thread each)")
    p.add_argument("--steps", type=int, default=None, help="training steps per trial (run length, not the check)")
    a = p.parse_args(argv)
    root = a.root.resolve()
    tracking = [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"tracking.experiment={EXPERIMENT}"]
    common = [*(SMOKE if a.smoke else []), *tracking, f"train.output_root={root / 'runs'}"]
    common += [f"launcher.max_parallel={a.parallel}", "launcher.threads_per_trial=1"]
    common += [f"train.steps={a.steps}"] if a.steps else []
    start = time.time()
    for par, study in STUDIES.items():
        t0 = time.time()
        _run("bitcpm.train", "-m", f"sweep={study}", *common)
        print(f"acceptance: study {study} ({par}): {time.time() - t0:.0f} s", flush=True)
        print(
            _run("bitcpm.windtunnel", "report", study, "--out", str(root / "reports"), *tracking),
            flush=True,
        )
    print(f"acceptance: both studies in {(time.time() - start) / 60:.1f} min on {os.cpu_count()} cores")
    return _compare(root, tracking)


def _compare(root: Path, tracking: list[str]) -> int:
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.tracking.client import log_files, open_client
    from bitcpm.windtunnel.lr_curves import plot_transfer
    from bitcpm.windtunnel.report_command import study_trials
    from bitcpm.windtunnel.tracking import store_uri

    job = compose_job(CommandLine(), tracking, check_rules=False)
    client = open_client(store_uri(job.tracking))
    found = {par: study_trials(client, EXPERIMENT, study) for par, study in STUDIES.items()}
    trials = {par: t for par, (_, t, _) in found.items()}
    png = plot_transfer([*trials["mup"], *trials["sp"]], "muP vs sp: loss against lr per width", root / "mup_vs_sp.png")
    lines, _ = verdict(trials)
    text = root / "verdict.txt"
    text.write_text("\n".join(lines) + "\n")
    for parent, _, _ in found.values():  # the side-by-side picture and the verdict on both studies' runs
        log_files(client, parent, [png, text], "acceptance")
    print("\n".join(lines))
    print(f"acceptance: side-by-side plot {png} (also on both studies' MLflow runs, artifacts acceptance/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
