"""BitCPM's QAT findings at small scale (not CI): the shipped studies run with seeds, each judged against its claim.

    python -m bitcpm.windtunnel.qat_acceptance              # the real one: about 17 minutes on 2 cores
    python -m bitcpm.windtunnel.qat_acceptance --smoke --studies qat_fraction      # a minute-scale pipeline check

The studies sweep=group_size, qat_lr, qat_fraction (and qat_scratch, the fraction's baseline) as Hydra multiruns at
experiment=qat_tunnel's scale, 3 seeds each: per seed one full-precision stable run serves every QAT branch of every
study, and the arms the studies share (g64 at QAT lr 5e-3 from 60% of the budget) train once. Then `findings` on
each: means and spreads over seeds, differences paired by seed with 95% t intervals, and the verdict by the rules in
qat_findings.py (fixed before the first run), whatever it is; all of it in ROOT/findings.md and on the studies'
MLflow runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

from bitcpm.windtunnel.findings_command import findings_section
from bitcpm.windtunnel.steps import run_step

_run = partial(run_step, "qat findings")

STUDIES = ("group_size", "qat_lr", "qat_fraction")
BASELINES = {"qat_fraction": "qat_scratch"}
EXPERIMENT = "windtunnel"  # the studies' tracking.experiment
SMOKE = [
    "model.hidden_size=128",
    "model.num_attention_heads=8",
    "model.intermediate_size=384",
    "train.steps=10",
    "train.seq_length=32",
    "train.eval_batches=1",
    "optim.warmup_steps=1",
    "stage.rewarmup_steps=1",
]
SMOKE_AXES = {"group_size": "quant=ternary_g32,ternary_channel", "qat_lr": "stage.lr=5e-3,1e-2"}
SMOKE_AXES |= {"qat_fraction": "study.qat_fraction=0.2,0.4", "qat_scratch": "quant=ternary_g64"}


def main(argv: list[str] | None = None) -> int:
    """Run the studies as Hydra multiruns, judge each, print the verdicts (exit 0 whatever they are)."""
    p = argparse.ArgumentParser(prog="python -m bitcpm.windtunnel.qat_acceptance", description=__doc__)
    p.add_argument("--root", type=Path, default=Path("outputs/windtunnel/qat_findings"), help="store, runs, reports")
    p.add_argument("--studies", default=",".join(STUDIES), help=f"comma-separated, of {', '.join(STUDIES)}")
    p.add_argument("--seeds", default="1,2,3", help="study.seed values (init and data order)")
    p.add_argument("--smoke", action="store_true", help="a width-128 model, 10 steps, 2 arms: checks the pipeline")
    p.add_argument("--parallel", type=int, default=2, help="trials at once (1 thread each)")
    p.add_argument("overrides", nargs="*", help="more overrides for every run (data.cache_dir=..., ...)")
    a = p.parse_args(argv)
    studies = [s for s in a.studies.split(",") if s]
    unknown = [s for s in studies if s not in STUDIES]
    if unknown:
        p.error(f"--studies: {', '.join(unknown)} is not one of {', '.join(STUDIES)}")
    root = a.root.resolve()
    tracking = [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", f"tracking.experiment={EXPERIMENT}"]
    common = [*(SMOKE if a.smoke else []), *tracking, f"train.output_root={root / 'runs'}", f"study.seed={a.seeds}"]
    common += [f"launcher.max_parallel={a.parallel}", "launcher.threads_per_trial=1", *a.overrides]
    start = time.time()
    for study in [*studies, *(BASELINES[s] for s in studies if s in BASELINES)]:
        t0 = time.time()
        axes = [SMOKE_AXES[study]] if a.smoke and study in SMOKE_AXES else []
        _run("bitcpm.train", "-m", f"sweep={study}", *common, *axes)
        print(f"qat findings: study {study}: {time.time() - t0:.0f} s", flush=True)
    minutes = (time.time() - start) / 60
    sections = [findings_section(study, None, tracking, root / "reports") for study in studies]
    summary = root / "findings.md"
    summary.write_text("\n".join(sections))
    print(f"qat findings: {len(studies)} studies trained in {minutes:.1f} min on {os.cpu_count()} cores; {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
