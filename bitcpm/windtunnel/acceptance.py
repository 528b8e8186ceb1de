"""The lr x width acceptance run (not CI): does the best lr stay put across widths with muP and move with sp?

    python -m bitcpm.windtunnel.acceptance              # the real one: about 30 minutes on 2 cores
    python -m bitcpm.windtunnel.acceptance --smoke      # a minute-scale check that the pipeline works

The shipped studies sweep=lr_width (muP) and sweep=lr_width_sp (standard parameterization) as Hydra
multiruns on the built-in corpus (real text): 3 widths spanning 8x in hidden size at a fixed depth and
head size, 6 base learning rates 2x apart; then the report of each, one side-by-side plot and the
verdict, with its numbers, whatever it is.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

# The shipped studies (sweeps/lr_width.yaml, lr_width_sp.yaml) at a size that fits 30 CPU minutes for both:
# 3 of their widths (8x), their 6 lrs, 2 layers, 120 steps of 1,024 tokens. Run length only; the check is fixed.
WIDTHS = "64,128,512"
LRS = [2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2, 8e-2]
FULL = ["model.num_layers=2", "train.steps=120", "train.eval_interval=40"]
SMOKE = ["model.num_layers=2", "train.steps=4", "train.eval_interval=2", "train.seq_length=32", "optim.warmup_steps=1"]
SMOKE_LRS = [1e-2, 4e-2]
STUDIES = {"mup": "lr_width", "sp": "lr_width_sp"}
EXPERIMENT = "windtunnel"  # the studies' tracking.experiment


def _run(*cmd: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = proc.stdout[-3000:] + proc.stderr[-3000:]
        sys.exit(f"acceptance: {' '.join(cmd[:4])} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def best_lr_index(trials, lrs: list[float]) -> dict[int, int]:
    """width -> grid index of its best lr."""
    from bitcpm.windtunnel.lr_curves import best_by

    best = best_by(trials, lambda t: t.width)
    return {w: min(range(len(lrs)), key=lambda i: abs(lrs[i] - t.lr)) for w, t in sorted(best.items())}


def fitted_optima(trials) -> dict[int, float | None]:
    """width -> the report's fitted optimum lr (quadratic in log lr), for context beside the grid check."""
    from bitcpm.windtunnel.lr_curves import fitted_optimum, lr_curves

    return {width: fitted_optimum(pts) for (_, width), pts in lr_curves(trials).items()}


def verdict(idx: dict[str, dict[int, int]], lrs: list[float], fitted: dict[str, dict[int, float | None]]) -> list[str]:
    """Side-by-side best lr per width and what it shows (mup within one grid point, sp moving by >= 2).

    The check is the grid's best point, as the acceptance states it; the fitted optima are printed beside it
    (in grid steps of 2x) so a reader can tell a noisy flat minimum from a moving one, but they decide nothing.
    """
    widths = sorted(next(iter(idx.values())))
    lines = [f"{'width':>6s} {'mup best lr':>12s} {'sp best lr':>12s} {'mup fitted':>11s} {'sp fitted':>10s}"]
    for w in widths:
        fit = [f"{fitted[p].get(w):.3g}" if fitted[p].get(w) else "n/a" for p in ("mup", "sp")]
        lines.append(f"{w:>6d} {lrs[idx['mup'][w]]:>12.3g} {lrs[idx['sp'][w]]:>12.3g} {fit[0]:>11s} {fit[1]:>10s}")
    spread = {p: max(i.values()) - min(i.values()) for p, i in idx.items()}
    mup_ok, sp_moves = spread["mup"] <= 1, spread["sp"] >= 2
    lines.append(
        f"mup: best lr spans {spread['mup']} grid point(s) across widths (expected <= 1): {'yes' if mup_ok else 'NO'}"
    )
    lines.append(
        f"sp: best lr spans {spread['sp']} grid point(s) across widths (expected >= 2): {'yes' if sp_moves else 'NO'}"
    )
    for p in ("mup", "sp"):
        known = [v for v in fitted[p].values() if v]
        if len(known) > 1:
            steps = math.log2(max(known) / min(known))
            lines.append(f"{p}: fitted optima span {steps:.2f} grid steps (context only, not the check)")
    if not (mup_ok and sp_moves):
        lines.append("acceptance: this scale does not show muP transfer against sp as expected (numbers above).")
    else:
        lines.append("acceptance: muP keeps the optimal lr across widths; sp moves it.")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run both studies as Hydra multiruns, report them, print the verdict."""
    p = argparse.ArgumentParser(prog="python -m bitcpm.windtunnel.acceptance", description=__doc__)
    p.add_argument("--root", type=Path, default=Path("outputs/windtunnel/lr_width"), help="store, runs, reports")
    p.add_argument("--smoke", action="store_true", help="2 lrs, 4 steps: checks the pipeline, shows nothing")
    p.add_argument("--parallel", type=int, default=2, help="trials at once (1 thread each)")
    p.add_argument("--steps", type=int, default=None, help="training steps per trial (run length, not the check)")
    a = p.parse_args(argv)
    root = a.root.resolve()
    tracking = [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"tracking.experiment={EXPERIMENT}"]
    lrs = SMOKE_LRS if a.smoke else LRS
    common = [*(SMOKE if a.smoke else FULL), f"model.hidden_size={WIDTHS}", f"optim.lr={','.join(map(str, lrs))}"]
    common += [*tracking, f"train.output_root={root / 'runs'}", f"launcher.max_parallel={a.parallel}"]
    common += ["launcher.threads_per_trial=1", *([f"train.steps={a.steps}"] if a.steps else [])]
    start = time.time()
    for par, study in STUDIES.items():
        t0 = time.time()
        _run("bitcpm.train", "-m", f"sweep={study}", *common)
        print(f"acceptance: study {study} ({par}): {time.time() - t0:.0f} s", flush=True)
        print(_run("bitcpm.windtunnel", "report", study, "--out", str(root / "reports"), *tracking), flush=True)
    print(f"acceptance: both studies in {(time.time() - start) / 60:.1f} min on {os.cpu_count()} cores")
    return _compare(root, tracking, lrs)


def _compare(root: Path, tracking: list[str], lrs: list[float]) -> int:
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.tracking.client import open_client
    from bitcpm.windtunnel.lr_curves import plot_transfer
    from bitcpm.windtunnel.report_command import study_trials
    from bitcpm.windtunnel.tracking import store_uri

    job = compose_job(CommandLine(), tracking, check_rules=False)
    client = open_client(store_uri(job.tracking))
    trials = {par: study_trials(client, EXPERIMENT, study)[1] for par, study in STUDIES.items()}
    png = plot_transfer([*trials["mup"], *trials["sp"]], "muP vs sp: loss against lr per width", root / "mup_vs_sp.png")
    idx = {par: best_lr_index(t, lrs) for par, t in trials.items()}
    for line in verdict(idx, lrs, {par: fitted_optima(t) for par, t in trials.items()}):
        print(line)
    print(f"acceptance: side-by-side plot {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
