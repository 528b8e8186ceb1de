"""`python -m bitcpm.windtunnel coordcheck`: run the coordinate check, plot it, log it, judge it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bitcpm.windtunnel.coord_measure import Drift, WidthRecord, drifts, failures, measure_width


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


def plot(records: list[WidthRecord], found: list[Drift], title: str, path: Path) -> Path:
    """mean |x| against width at every step, one panel per activation and per weight kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = [r.width for r in records]
    panels = [d for d in found if d.kind == "activation"] + [d for d in found if d.kind == "update"]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, d in zip(axes.flat, panels, strict=False):
        series = [getattr(r, "activations" if d.kind == "activation" else "updates")[d.name] for r in records]
        for t in range(len(series[0])):
            ax.plot(widths, [s[t] for s in series], marker="o", alpha=0.3 + 0.7 * (t + 1) / len(series[0]))
        ax.set(xscale="log", yscale="log", title=f"{d.name}\nslope {d.slope:+.2f}", xlabel="width")
        ax.title.set_fontsize(8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _log(job, args: CoordCheckArgs, found: list[Drift], files: list[Path], passed: bool) -> str | None:
    """A run in the job's MLflow experiment with the slopes, the verdict, the PNG and the raw numbers."""
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
        "steps": args.steps,
        "lr": args.lr,
        "tolerance": args.tolerance,
        "parameterization": job.model.parameterization,
        "quant": "none" if not job.quant.enabled else f"ternary_g{job.quant.group_size}",
        "overrides": " ".join(args.overrides),
    }
    log_params(client, rid, params)
    slopes = {f"slope.{d.kind}.{d.name}".replace(" ", "_").replace("(", "").replace(")", ""): d.slope for d in found}
    log_metrics(client, rid, slopes)
    log_files(client, rid, files)
    finish_run(client, rid)
    return rid


def run_coord_check(args: CoordCheckArgs) -> int:
    """Measure every width, write PNG + JSON under args.out, log to MLflow; 0 if nothing drifts, else 1."""
    from bitcpm.backends import get_backend
    from bitcpm.training.distributed import init_distributed, shutdown_distributed

    jobs = width_jobs(args)
    backend = get_backend("cpu")
    backend.prepare()
    init_distributed(backend, "gloo", 1, 1, 1, args.seed)
    try:
        records = [
            measure_width(j, w, args.steps, args.lr, args.batch, args.seed)
            for j, w in zip(jobs, args.widths, strict=True)
        ]
    finally:
        shutdown_distributed()
    found = drifts(records)
    bad = failures(found, args.tolerance)
    job = jobs[0]
    args.out.mkdir(parents=True, exist_ok=True)
    title = f"coord check: {job.model.parameterization}, quant={'ternary' if job.quant.enabled else 'none'}"
    png = plot(records, found, title, args.out / "coord_check.png")
    raw = args.out / "coord_check.json"
    raw.write_text(json.dumps({"records": [asdict(r) for r in records], "slopes": [asdict(d) for d in found]}))
    print(f"coord check over widths {args.widths} ({args.steps} steps, lr {args.lr}): size ~ width**slope")
    for d in found:
        flag = "DRIFT" if d in bad else "ok"
        print(f"  {d.kind:10s} {d.name:52s} slope {d.slope:+.3f}  {flag}")
    run_id = _log(job, args, found, [png, raw], passed=not bad)
    print(f"coord check plot: {png}" + (f" (MLflow run {run_id})" if run_id else ""))
    if bad:
        worst = max(bad, key=lambda d: abs(d.slope))
        print(
            f"coordcheck: error: {worst.name} drifts with width: its {worst.kind} size scales as "
            f"width**{worst.slope:+.2f} (tolerance ±{args.tolerance}); {len(bad)} of {len(found)} drift (table above)"
        )
        return 1
    print(f"coordcheck: passed: every slope within ±{args.tolerance}")
    return 0
