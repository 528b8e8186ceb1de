"""`python -m bitcpm.windtunnel predict LADDER --target WIDTH --tokens T`: fit the ladder's points and predict.

Reads <train.output_root>/ladders/LADDER/points.json (written by `ladder`), fits L(N, D) per precision with bootstrap
replicates (ladder_fit.py), and prints for a target width of the ladder's family and a token budget: each precision's
predicted final validation loss with its 95% prediction interval, the ternary-to-full-precision gap with its
interval, the gap against N, and, when the target runs have finished (their run directories are the ones this
command composes), their actual losses beside the predictions. The target is a plain WSD run of the family: the
budget in steps, the ladder's decay fraction; N counts non-embedding parameters (Kaplan et al. 2020), D the
tokens trained.

Pictures and a markdown report go to --out and, with MLflow, onto the ladder's parent run (artifacts
predict/<id>/, metrics pred/<id>/<precision>/loss, low, high, gap, actual, error). `--experiment NAME` writes
conf/experiment/NAME.yaml: the target run with the predictions as tracking tags (training/prediction.py), so
`python -m bitcpm.train -m experiment=NAME` trains it in every precision and each run logs its actual loss beside
its prediction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.windtunnel.ladder import LadderSpec, family_model, ladder_dir, rung_model
from bitcpm.windtunnel.ladder_command import POINTS_FILE, study_name
from bitcpm.windtunnel.ladder_fit import BOOTSTRAP, LawFit, Point, fit_with_bootstrap, gap
from bitcpm.windtunnel.ladder_plots import FULL, Target, plot_gap_vs_n, plot_loss_vs_compute
from bitcpm.windtunnel.lr_curves import Estimate

WITHIN = 0.03
"""The acceptance bound on |actual / predicted - 1| (issue: within 3% of the point prediction)."""


@dataclass
class PredictArgs:
    """What `predict` was asked."""

    ladder: str
    width: int
    tokens: int | None = None
    steps: int | None = None
    experiment: str | None = None
    config_dir: Path | None = None
    force: bool = False
    out: Path | None = None
    replicates: int = BOOTSTRAP
    overrides: list[str] = field(default_factory=list)


@dataclass
class Prediction:
    """What `predict` found: the fits, the target and its predictions, actual losses where the target ran."""

    spec: LadderSpec
    fits: dict[str, LawFit]
    target: Target
    steps: int
    gaps: dict[str, Estimate]
    run_dirs: dict[str, Path]
    """Each precision's target run directory (where its actual loss is read)."""
    points: dict[str, list[dict]]
    """The ladder's points per precision."""
    root: Path
    """The ladder's directory."""

    @property
    def ident(self) -> str:
        """Names this prediction (width and steps) in MLflow keys and file names."""
        return f"w{self.target.width}-s{self.steps}"

    def verdict(self, label: str) -> tuple[bool, bool] | None:
        """(inside the interval, within 3% of the point prediction) of a trained target, None before."""
        actual, est = self.target.actual.get(label), self.target.predicted[label]
        if actual is None:
            return None
        inside = est.low is not None and est.high is not None and est.low <= actual <= est.high
        return inside, abs(actual / est.value - 1) <= WITHIN


def load_points(path: Path) -> tuple[LadderSpec, list[dict]]:
    """The spec and points a ladder wrote (ValueError naming the file when there are none)."""
    if not path.is_file():
        raise ValueError(f"{path}: no such ladder (run `python -m bitcpm.windtunnel ladder --name ...` first)")
    data = json.loads(path.read_text())
    return LadderSpec.from_dict(data["spec"]), list(data["points"])


def target_overrides(spec: LadderSpec, model: list[str], precision: str, steps: int, extra: list[str]) -> list[str]:
    """The target: a plain WSD run of the family at its width and budget (a branch's schedule from step 0)."""
    return [
        *spec.overrides,
        *model,
        f"quant={precision}",
        f"optim.decay_fraction={spec.decay_fraction}",
        f"train.steps={steps}",
        *extra,
    ]


def predict(a: PredictArgs) -> Prediction:
    """Fit the ladder and predict the target (and read the target's actual losses where it finished)."""
    from bitcpm.config.derived import tokens_per_step
    from bitcpm.frontend.rundir import run_dir_for
    from bitcpm.plan.counts import count_params, flops_per_token
    from bitcpm.training.finished_marker import FINISHED_MARKER

    cmd = _command_line(a)
    where = compose_job(cmd, list(a.overrides), check_rules=False)
    spec, points = load_points(ladder_dir(where, a.ladder) / POINTS_FILE)
    model = rung_model(spec, family_model(spec, cmd), a.width)
    probe = compose_job(cmd, target_overrides(spec, model, spec.precisions[0], 1, a.overrides), check_rules=False)
    per_step = tokens_per_step(probe)
    steps = a.steps if a.steps is not None else max(1, math.ceil((a.tokens or 0) / per_step))
    jobs = {}
    for precision in spec.precisions:
        job = compose_job(cmd, target_overrides(spec, model, precision, steps, a.overrides))
        jobs[job.quant.label] = job
    by_label: dict[str, list[dict]] = {label: [p for p in points if p["precision"] == label] for label in jobs}
    fits = {  # independent replicates per precision (own seeds): the gap's interval must not borrow their agreement
        label: fit_with_bootstrap(
            [Point(p["n"], p["tokens"], p["loss"]) for p in pts], a.replicates, i, f"ladder {a.ladder}, {label}"
        )
        for i, (label, pts) in enumerate(by_label.items())
    }
    first = next(iter(jobs.values()))
    n, d = count_params(first.model).non_embedding, steps * per_step
    predicted = {label: fit.predict(n, d) for label, fit in fits.items()}
    target = Target(a.width, n, d, flops_per_token(first.model, first.train.seq_length), predicted)
    run_dirs = {label: run_dir_for(job) for label, job in jobs.items()}
    for label, run_dir in run_dirs.items():
        marker = run_dir / FINISHED_MARKER
        value = json.loads(marker.read_text()).get("val_loss") if marker.exists() else None
        target.actual[label] = float(value) if value is not None else None
    gaps = {label: gap(fits[label], fits[FULL], n, d) for label in fits if label != FULL and FULL in fits}
    return Prediction(spec, fits, target, steps, gaps, run_dirs, by_label, ladder_dir(where, a.ladder))


def _command_line(a: PredictArgs) -> CommandLine:
    return CommandLine(config_dirs=[str(a.config_dir)] if a.config_dir else [])


def report(p: Prediction, by_label: dict[str, list[dict]]) -> str:
    """The prediction as markdown: the laws, the target table, the gap against N."""
    from bitcpm.plan.counts import human

    t = p.target
    lines = [f"# Ladder `{p.spec.name}`: prediction for width {t.width}, {p.steps} steps", ""]
    lines += ["| precision | points | fitted law | rms residual | exponent at its range's edge |", "|" + "---|" * 5]
    for label, fit in p.fits.items():
        edge = ", ".join(fit.law.at_edge()) or "-"
        lines.append(f"| {label} | {len(fit.points)} | {fit.law.text()} | {100 * fit.rms_residual:.2f}% | {edge} |")
    lines += [
        "",
        f"Target: width {t.width}, N = {human(t.n)} non-embedding parameters, {p.steps} steps = D = {t.d:,.0f} "
        f"tokens, WSD with decay fraction {p.spec.decay_fraction}.",
        "",
        "| precision | predicted loss [95% interval] | actual | error | inside | within 3% |",
        "|---|---|---|---|---|---|",
    ]
    for label, est in t.predicted.items():
        actual, verdict = t.actual.get(label), p.verdict(label)
        if actual is None or verdict is None:
            lines.append(f"| {label} | {est.text('.4f')} | not run | | | |")
        else:
            err = 100 * (actual / est.value - 1)
            inside, near = ("yes" if v else "NO" for v in verdict)
            lines.append(f"| {label} | {est.text('.4f')} | {actual:.4f} | {err:+.2f}% | {inside} | {near} |")
    for label, est in p.gaps.items():
        actual, base = t.actual.get(label), t.actual.get(FULL)
        measured = f"; actual {actual - base:+.4f}" if actual is not None and base is not None else ""
        rel = 100 * est.value / t.predicted[FULL].value
        lines += ["", f"Gap {label} - {FULL} at the target: {est.text('+.4f')} nats ({rel:+.1f}%){measured}."]
    if p.gaps:
        lines += ["", "## Gap against N (fitted, 95% interval; measured on the ladder)", ""]
        budgets = sorted({pt["tokens"] for pt in by_label[FULL]})
        for label in p.gaps:
            lines += [f"### {label} - {FULL}", "", "| width | N | " + " | ".join(f"D={d:,}" for d in budgets)]
            lines[-1] += f" | D={t.d:,.0f} (target) |"
            lines.append("|---|---|" + "---|" * (len(budgets) + 1))
            sizes = sorted({(pt["width"], pt["n"]) for pt in by_label[FULL]}) + [(t.width, t.n)]
            for width, n in sizes:
                cells = []
                for d in [*budgets, t.d]:
                    cell = gap(p.fits[label], p.fits[FULL], n, d).text("+.3f")
                    seen = _measured(by_label, label, width, d)
                    cells.append(cell + (f" (measured {seen:+.3f})" if seen is not None else ""))
                lines.append(f"| {width} | {human(n)} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _measured(by_label: dict[str, list[dict]], label: str, width: int, d: float) -> float | None:
    q = [pt["loss"] for pt in by_label[label] if pt["width"] == width and pt["tokens"] == d]
    f = [pt["loss"] for pt in by_label[FULL] if pt["width"] == width and pt["tokens"] == d]
    return q[0] - f[0] if q and f else None


def run_predict(a: PredictArgs) -> int:
    """`predict`: see predict_and_report."""
    predict_and_report(a)
    return 0


def predict_and_report(a: PredictArgs) -> Prediction:
    """Predict, print the report, write the pictures, record it in MLflow, write the experiment if asked."""
    compose_job(CommandLine(), list(a.overrides), check_rules=False)  # a bad override: one line naming its key
    if (a.tokens is None) == (a.steps is None):
        raise ValueError("predict: give the target's budget as --tokens T or as --steps S (one of them)")
    if a.width < 1 or (a.tokens is not None and a.tokens < 1) or (a.steps is not None and a.steps < 2):
        raise ValueError("predict: --target, --tokens and --steps must be positive")
    if a.experiment and a.config_dir is not None:
        a.config_dir.mkdir(parents=True, exist_ok=True)  # Hydra composes with it as a search path from the start
    p = predict(a)
    cmd = _command_line(a)
    by_label = p.points
    out = a.out or p.root / "predictions" / p.ident
    out.mkdir(parents=True, exist_ok=True)
    text = report(p, by_label)
    pngs = [plot_loss_vs_compute(p.fits, by_label, p.target, out / "loss_vs_compute.png")]
    gap_png = plot_gap_vs_n(p.fits, by_label, p.target, out / "gap_vs_n.png")
    pngs += [gap_png] if gap_png is not None else []
    text += "".join(f"\n![{png.stem}]({png.name})\n" for png in pngs)
    md = out / "prediction.md"
    md.write_text(text)
    print(text)
    for label, run_dir in p.run_dirs.items():
        state = "finished" if p.target.actual.get(label) is not None else "not run yet"
        print(f"predict: target run ({label}): {run_dir} ({state})")
    parent = _record(p, compose_job(cmd, [*p.spec.overrides, *a.overrides], check_rules=False), [md, *pngs])
    if a.experiment:
        write_experiment(p, a, cmd, parent)
    print(f"predict: report {md} and pictures in {out}" + (f" (also on MLflow run {parent})" if parent else ""))
    return p


def _record(p: Prediction, job, files: list[Path]) -> str | None:
    """The prediction (and actual losses, where known) on the ladder's MLflow parent run; its id, or None."""
    if job.tracking.backend != "mlflow":
        return None
    from bitcpm.tracking.client import log_files, log_metrics, open_client, set_tags
    from bitcpm.windtunnel.tracking import experiment_name, find_study_run, store_uri

    client = open_client(store_uri(job.tracking))
    parent = find_study_run(client, experiment_name(job.tracking), study_name(p.spec.name))
    if parent is None:
        print(f"predict: no MLflow parent run of ladder {p.spec.name} in experiment {experiment_name(job.tracking)}")
        return None
    run_id = parent.info.run_id
    key = f"pred/{p.ident}"
    metrics: dict[str, float | None] = {}
    for label, est in p.target.predicted.items():
        metrics |= {f"{key}/{label}/loss": est.value, f"{key}/{label}/low": est.low, f"{key}/{label}/high": est.high}
        actual = p.target.actual.get(label)
        if actual is not None:
            metrics |= {f"{key}/{label}/actual": actual, f"{key}/{label}/error": actual / est.value - 1}
    for label, est in p.gaps.items():
        metrics |= {f"{key}/{label}/gap": est.value, f"{key}/{label}/gap_low": est.low}
        metrics |= {f"{key}/{label}/gap_high": est.high}
    log_metrics(client, run_id, metrics)
    tags = {f"bitcpm.prediction.{p.ident}.{label}": est.text(".4f") for label, est in p.target.predicted.items()}
    set_tags(client, run_id, tags)
    log_files(client, run_id, files, f"predict/{p.ident}")
    return run_id


def write_experiment(p: Prediction, a: PredictArgs, cmd: CommandLine, parent: str | None) -> Path:
    """conf/experiment/NAME.yaml: the target run in every precision, carrying its predictions as tags."""
    from omegaconf import OmegaConf

    from bitcpm.frontend.rundir import run_dir_for
    from bitcpm.presets import conf_dir
    from bitcpm.training.prediction import prediction_tags

    name = str(a.experiment)
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--experiment={name}: use letters, digits, '-' and '_' only")
    folder = (a.config_dir or conf_dir()) / "experiment"
    path = folder / f"{name}.yaml"
    if path.exists() and not a.force:
        raise ValueError(f"--experiment={name}: {path} exists (pass --force to overwrite)")
    labels = list(p.target.predicted)
    job = compose_job(cmd, _target_of(p, a, cmd, p.spec.precisions[0]), check_rules=False)
    body = OmegaConf.to_container(OmegaConf.structured(job))
    data = {k: v for k, v in body["data"].items() if k != "cache_dir"}
    train = {k: body["train"][k] for k in ("seq_length", "steps", "seed", "eval_interval", "eval_batches")}
    parallel = {k: body["parallel"][k] for k in ("global_batch_size", "micro_batch_size")}
    tags = {"bitcpm.ladder": p.spec.name, "bitcpm.prediction": p.ident}
    for label, est in p.target.predicted.items():
        tags |= prediction_tags(label, est.value, est.low, est.high)
    if parent is not None:
        tags["mlflow.parentRunId"] = parent  # the target's run nests under the ladder (a study nests it under its own)
    tracking = {"tags": tags} | ({"experiment": job.tracking.experiment} if job.tracking.experiment else {})
    preset = {
        "defaults": [{"override /quant": p.spec.precisions[0]}],
        "experiment_name": name,
        "model": body["model"],
        "data": data,
        "optim": body["optim"],
        "train": train,
        "parallel": parallel,
        "tracking": tracking,
        "hydra": {"sweeper": {"params": {"quant": ",".join(p.spec.precisions)}}},
    }
    predicted = "; ".join(f"{label} {est.text('.4f')}" for label, est in p.target.predicted.items())
    header = [
        "# @package _global_",
        f"# Target run of scaling ladder '{p.spec.name}' (python -m bitcpm.windtunnel predict): width {a.width},",
        f"# {p.steps} steps = {p.target.d:,.0f} tokens, WSD with decay fraction {p.spec.decay_fraction}.",
        f"# Predicted final validation loss [95%]: {predicted}.",
        f"# Train every precision: python -m bitcpm.train -m experiment={name}   (one: ... experiment={name} "
        f"quant={labels[0]}); each run logs its actual loss beside the prediction (prediction_error).",
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + OmegaConf.to_yaml(OmegaConf.create(preset)))
    try:  # the preset must give the very runs predicted: same run directories as the composed targets
        for precision in p.spec.precisions:
            composed = compose_job(cmd, [f"experiment={name}", f"quant={precision}", *a.overrides])
            if run_dir_for(composed) != p.run_dirs[composed.quant.label]:
                raise ValueError(f"--experiment={name}: the preset written does not give the target run ({precision})")
    except Exception:
        path.unlink()  # never leave a preset behind that does not validate or train something else
        raise
    print(f"predict: wrote {path}; train the target in every precision: python -m bitcpm.train -m experiment={name}")
    return path


def _target_of(p: Prediction, a: PredictArgs, cmd: CommandLine, precision: str) -> list[str]:
    model = rung_model(p.spec, family_model(p.spec, cmd), a.width)
    return target_overrides(p.spec, model, precision, p.steps, a.overrides)
