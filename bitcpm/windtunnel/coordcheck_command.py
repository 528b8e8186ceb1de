"""`python -m bitcpm.windtunnel coordcheck`: run the coordinate check over widths and seeds, plot it, log it, judge it.

Every width is measured with `seeds` seeds (seed, seed+1, ...: model init and batch); each quantity's slope is
fitted to the mean over seeds at each width, and reported ± the standard deviation of the per-seed slopes.
The verdict compares the mean slope with the tolerance; it needs at least MIN_WIDTHS widths spanning at least
MIN_SPAN x (microsoft/mup's examples span 16x, 2^7-2^11, with 3 seeds).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bitcpm.windtunnel.coord_measure import Drift, WidthRecord, by_seed, drifts, excess, failures, measure_width

MIN_WIDTHS = 4
MIN_SPAN = 16


@dataclass
class CoordCheckArgs:
    """What the coordcheck command was asked for."""

    widths: list[int]
    steps: int
    lr: float
    batch: int
    seq_length: int
    head_dim: int
    tolerance: float
    seed: int
    out: Path
    overrides: list[str]
    seeds: int = 3
    """How many seeds (seed, seed+1, ...) measure every width."""

    def __post_init__(self) -> None:
        """Refuse what cannot give a verdict: too few widths, too narrow a span, no seeds, no steps."""
        widths = sorted(self.widths)
        given = ",".join(map(str, self.widths))
        if len(widths) < MIN_WIDTHS or widths[-1] < MIN_SPAN * widths[0]:
            span = widths[-1] / widths[0] if widths else 0
            raise ValueError(
                f"--widths={given}: the coord check needs at least {MIN_WIDTHS} widths spanning at least "
                f"{MIN_SPAN}x (largest / smallest), got {len(widths)} spanning {span:g}x"
            )
        if self.seeds < 1:
            raise ValueError(f"--seeds={self.seeds}: expected at least 1")
        if self.steps < 1:
            raise ValueError(f"--steps={self.steps}: expected at least 1")

    @property
    def seed_list(self) -> list[int]:
        """The seeds every width is measured with."""
        return list(range(self.seed, self.seed + self.seeds))


def width_jobs(args: CoordCheckArgs) -> list:
    """One validated job per width (a bad override or width stops before anything is built)."""
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.windtunnel.widths import width_overrides

    cmd = CommandLine()
    # No clipping: a global-norm clip rescales updates by a width-dependent factor (hides or fakes drift).
    fixed = ["quant=none", *args.overrides, f"train.seq_length={args.seq_length}", "optim.clip_grad=0"]
    fixed += [f"parallel.micro_batch_size={args.batch}", f"parallel.global_batch_size={args.batch}"]
    base = compose_job(cmd, fixed, check_rules=False).model
    return [compose_job(cmd, [*fixed, *width_overrides(base, w, args.head_dim)]) for w in args.widths]


def _pm(d: Drift) -> str:
    """'+0.12 ± 0.03' (no interval with one seed)."""
    return f"{d.slope:+.3f}" + (f" ± {d.interval:.3f}" if d.interval is not None else "")


def plot(records: list[WidthRecord], found: list[Drift], title: str, path: Path) -> Path:
    """mean |x| against width, one panel per activation and per weight kind: the mean over seeds at every step
    (later steps darker) and, at the last step (the one fitted), the band from the smallest to the largest seed."""
    from bitcpm.windtunnel.figures import pyplot, save

    plt = pyplot()
    groups = list(by_seed(records).values())
    widths = [r.width for r in groups[0]]
    panels = [d for d in found if d.kind == "activation"] + [d for d in found if d.kind == "update"]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, d in zip(axes.flat, panels, strict=False):
        attr = "activations" if d.kind == "activation" else "updates"
        # series[seed][width][step]
        series = [[getattr(r, attr)[d.name] for r in group] for group in groups]
        steps = len(series[0][0])
        for t in range(steps):
            mean = [sum(s[i][t] for s in series) / len(series) for i in range(len(widths))]
            ax.plot(widths, mean, marker="o", color="C0", alpha=0.2 + 0.8 * (t + 1) / steps)
        lo = [min(s[i][-1] for s in series) for i in range(len(widths))]
        hi = [max(s[i][-1] for s in series) for i in range(len(widths))]
        ax.fill_between(widths, lo, hi, color="C1", alpha=0.3, label=f"{len(series)} seeds, last step")
        ax.set(xscale="log", yscale="log", title=f"{d.name}\nslope {_pm(d)}", xlabel="width")
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if panels:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    return save(fig, path, dpi=80, rect=(0, 0, 1, 1 - 0.4 / (3 * rows)))  # leave the suptitle its own strip


def _metric_key(prefix: str, d: Drift) -> str:
    return f"{prefix}.{d.kind}.{d.name}".replace(" ", "_").replace("(", "").replace(")", "")


def _log(job, args: CoordCheckArgs, found: list[Drift], files: list[Path], passed: bool) -> str | None:
    """A run in the job's MLflow experiment with the slopes, their spread, the verdict, the PNG and the raw numbers."""
    if job.tracking.backend == "none":
        return None
    from bitcpm.tracking.client import create_run, finish_run, log_files, log_metrics, log_params, open_client
    from bitcpm.tracking.run_info import default_tags
    from bitcpm.windtunnel.tracking import KIND_TAG, experiment_name, store_uri

    client = open_client(store_uri(job.tracking))
    tags = {**default_tags(), KIND_TAG: "coordcheck", "coordcheck.passed": str(passed).lower()}
    rid = create_run(client, experiment_name(job.tracking), "coordcheck", tags)
    params = {
        "widths": ",".join(map(str, args.widths)),
        "seeds": ",".join(map(str, args.seed_list)),
        "steps": args.steps,
        "lr": args.lr,
        "tolerance": args.tolerance,
        "parameterization": job.model.parameterization,
        "quant": "none" if not job.quant.enabled else f"ternary_g{job.quant.group_size}",
        "overrides": " ".join(args.overrides),
    }
    log_params(client, rid, params)
    metrics = {_metric_key("slope", d): d.slope for d in found}
    metrics |= {_metric_key("slope_sd", d): d.interval for d in found if d.interval is not None}
    log_metrics(client, rid, metrics)
    log_files(client, rid, files)
    finish_run(client, rid)
    return rid


def measure_all(args: CoordCheckArgs, jobs: list) -> list[WidthRecord]:
    """Every (seed, width) pair, one seed after another, with a progress line per seed."""
    from bitcpm.backends import get_backend
    from bitcpm.training.distributed import init_distributed, shutdown_distributed

    backend = get_backend("cpu")
    backend.prepare()
    init_distributed(backend, "gloo", 1, 1, 1, args.seed)
    records = []
    try:
        for seed in args.seed_list:
            start = time.monotonic()
            for job, width in zip(jobs, args.widths, strict=True):
                records.append(measure_width(job, width, args.steps, args.lr, args.batch, seed))
            print(f"  seed {seed}: widths {args.widths} measured in {time.monotonic() - start:.0f} s", flush=True)
    finally:
        shutdown_distributed()
    return records


def run_coord_check(args: CoordCheckArgs) -> int:
    """Measure every width and seed, write PNG + JSON under args.out, log to MLflow; 0 if nothing drifts, else 1."""
    start = time.monotonic()
    jobs = width_jobs(args)
    job = jobs[0]
    quant = "none" if not job.quant.enabled else f"ternary_g{job.quant.group_size}"
    print(
        f"coord check: {job.model.parameterization}, quant={quant}, widths {args.widths}, seeds {args.seed_list}, "
        f"{args.steps} steps at lr {args.lr}",
        flush=True,
    )
    records = measure_all(args, jobs)
    found = drifts(records)
    bad = failures(found, args.tolerance)
    args.out.mkdir(parents=True, exist_ok=True)
    title = f"coord check: {job.model.parameterization}, quant={quant}, mean and spread of {args.seeds} seeds"
    png = plot(records, found, title, args.out / "coord_check.png")
    raw = args.out / "coord_check.json"
    raw.write_text(
        json.dumps(
            {
                "widths": sorted(args.widths),
                "seeds": args.seed_list,
                "steps": args.steps,
                "tolerance": args.tolerance,
                "records": [asdict(r) for r in records],
                "slopes": [asdict(d) for d in found],
            }
        )
    )
    spread = "± sd of the per-seed slopes" if args.seeds > 1 else "one seed, no interval"
    print(f"size ~ width**slope, slope fitted to the mean over {args.seeds} seeds ({spread}); worst first:")
    for d in sorted(found, key=excess, reverse=True):
        flag = "DRIFT" if d in bad else "ok"
        print(f"  {d.kind:10s} {d.name:52s} slope {_pm(d):16s} {flag}")
    run_id = _log(job, args, found, [png, raw], passed=not bad)
    print(f"coord check plot: {png}" + (f" (MLflow run {run_id})" if run_id else ""))
    took = f"{time.monotonic() - start:.0f} s"
    if bad:
        worst = max(bad, key=excess)
        print(
            f"coordcheck: error: {worst.name} drifts with width: its {worst.kind} size scales as "
            f"width**{_pm(worst)} (tolerance ±{args.tolerance}); {len(bad)} of {len(found)} drift (table above; {took})"
        )
        return 1
    worst = max(found, key=excess)
    print(f"coordcheck: passed: every slope within ±{args.tolerance} (worst {worst.name} {_pm(worst)}; {took})")
    return 0
