"""`python -m bitcpm.windtunnel ladder`: train a scaling ladder through the front end and write its points.

Two batches, each a study batch as a Hydra multirun hands it over (frontend/study.py: every member composed and
checked first, finished runs skipped, trials through the job's own `launcher`: local slots or one Slurm array):
first the stable runs, then the decay branches, whose checks need the stable runs' checkpoints. Both batches are
children of one MLflow parent run, `study-ladder-NAME` (tag bitcpm.study=ladder-NAME), found again on a rerun.
With a launcher that does not wait (launcher=slurm launcher.wait=false) the command ends after submitting the stable
runs; run it again once they finished to branch them.

The finished branches' (N, D, loss) points go to <train.output_root>/ladders/NAME/points.json, with the spec, for
`python -m bitcpm.windtunnel predict NAME`, and onto the parent run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bitcpm.frontend.compose import CommandLine
from bitcpm.windtunnel.ladder import LadderPlan, LadderSpec, Rung, ladder_dir, plan_ladder

POINTS_FILE = "points.json"
SEARCHED = ["model.hidden_size", "quant", "train.steps"]
"""The keys that tell a ladder's runs apart (their MLflow run names)."""


def study_name(name: str) -> str:
    """The ladder's MLflow study name (tag bitcpm.study of its parent run)."""
    return f"ladder-{name}"


def point_of(rung: Rung) -> dict:
    """A finished branch as a ladder point: width, precision, parameters, tokens, final loss, where it ran."""
    from bitcpm.config.derived import tokens_per_step
    from bitcpm.plan.counts import count_params, flops_per_token

    counts = count_params(rung.job.model)
    return {
        "width": rung.width,
        "precision": rung.job.quant.label,
        "n": counts.non_embedding,
        "n_total": counts.total,
        "steps": rung.steps,
        "branch_step": rung.branch_step,
        "tokens": rung.steps * tokens_per_step(rung.job),
        "flops_per_token": flops_per_token(rung.job.model, rung.job.train.seq_length),
        "loss": rung.final_loss,
        "run_dir": str(rung.run_dir),
    }


def points_of(plan: LadderPlan) -> list[dict]:
    """Every finished branch's point."""
    return [point_of(r) for r in plan.branches if r.finished and r.final_loss is not None]


def write_points(plan: LadderPlan) -> Path:
    """<ladder dir>/points.json: the spec, the stable runs and every finished branch's point."""
    root = ladder_dir(plan.stable[0].job, plan.spec.name)
    root.mkdir(parents=True, exist_ok=True)
    data = {
        "spec": plan.spec.to_dict(),
        "stable": [{"width": r.width, "precision": r.job.quant.label, "run_dir": str(r.run_dir)} for r in plan.stable],
        "points": points_of(plan),
    }
    path = root / POINTS_FILE
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def print_plan(plan: LadderPlan) -> None:
    """One line per rung: its stable run and its branches, finished or to train."""
    from bitcpm.config.derived import tokens_per_step
    from bitcpm.plan.counts import count_params, human

    spec = plan.spec
    per_step = tokens_per_step(plan.stable[0].job)
    budgets = ", ".join(f"{t} steps ({human(t * per_step)} tokens)" for t in sorted(spec.steps))
    print(
        f"ladder {spec.name}: {len(spec.widths)} widths x {len(spec.precisions)} precisions x {len(spec.steps)} "
        f"budgets [{budgets}], decay fraction {spec.decay_fraction}; stable runs {spec.stable_steps} steps, "
        f"checkpoint every {spec.save_interval}"
    )
    branches = {(r.width, r.precision, r.steps): r for r in plan.branches}
    budgets = " ".join(f"{f'{t} steps':>10s}" for t in sorted(spec.steps))
    print(f"  {'precision':<16s} {'width':>6s} {'N (non-emb.)':>12s} {'stable run':>10s} | branches: {budgets}")
    for stable in plan.stable:
        own = [branches[(stable.width, stable.precision, t)] for t in sorted(spec.steps)]
        state = " ".join(f"{'finished' if b.finished else 'to train':>10s}" for b in own)
        n = human(count_params(stable.job.model).non_embedding)
        mark = "finished" if stable.finished else "to train"
        print(f"  {stable.job.quant.label:<16s} {stable.width:>6d} {n:>12s} {mark:>10s} |           {state}")


def _run_batch(cmd: CommandLine, rungs: list[Rung], sweep, offset: int) -> list:
    """One batch through the study runner (what bitcpm's Hydra Launcher does with a multirun's batch)."""
    from bitcpm.config.validate import ConfigError
    from bitcpm.frontend.launch import memory_refusal
    from bitcpm.frontend.study import plan_study, run_study

    sweep.indices = [offset + i for i in range(len(rungs))]
    study = plan_study(cmd, [r.overrides for r in rungs], sweep.name, sweep)
    refusal = memory_refusal(study.members)
    if refusal is not None:
        raise ConfigError(refusal)
    return run_study(study)


def _sweep(plan: LadderPlan, root: Path):
    from bitcpm.frontend.study import SweepContext

    spec = plan.spec
    identity = hashlib.sha256(f"ladder\n{spec.name}\n{root.resolve()}".encode()).hexdigest()[:12]
    params = {
        "ladder.widths": ",".join(map(str, spec.widths)),
        "ladder.precisions": ",".join(spec.precisions),
        "ladder.steps": ",".join(map(str, spec.steps)),
        "ladder.decay_fraction": str(spec.decay_fraction),
    }
    return SweepContext(study_name(spec.name), identity, len(plan.runs), params, list(SEARCHED))


def run_ladder(spec: LadderSpec, config_dirs: list[str], dry_run: bool) -> int:
    """Plan the ladder, train what has not finished (stable runs, then branches), write and log its points."""
    cmd = CommandLine(config_dirs=config_dirs)
    plan = plan_ladder(spec, cmd)
    root = ladder_dir(plan.stable[0].job, spec.name)
    print_plan(plan)
    todo = plan.todo()
    if dry_run:
        print(f"ladder {spec.name}: {len(todo)} of {len(plan.runs)} runs to train; dry run, nothing started")
        return 0
    print(f"ladder {spec.name}: {len(todo)} of {len(plan.runs)} runs to train", flush=True)
    sweep = _sweep(plan, root)
    _run_batch(cmd, plan.stable, sweep, 0)
    waiting = [r for r in plan.stable if not r.finished]
    if waiting:
        print(
            f"ladder {spec.name}: {len(waiting)} stable run(s) did not finish here (failed, or submitted without "
            "waiting): run the same command again once they finished to branch them"
        )
        return 1 if any(r.failed for r in sweep.results) else 0
    plan = plan_ladder(spec, cmd)  # again: the branches' checks now read the stable runs' checkpoints
    _run_batch(cmd, plan.branches, sweep, len(plan.stable))
    path = write_points(plan)
    points = points_of(plan)
    _close(sweep, plan, path, len(points))
    _print_points(points)
    missing = len(plan.branches) - len(points)
    unfinished = f"; {missing} branch(es) unfinished" if missing else ""
    print(f"ladder {spec.name}: {len(points)} point(s) in {path}{unfinished}")
    return 0 if not missing else 1


def _close(sweep, plan: LadderPlan, points_file: Path, points: int) -> None:
    """End the parent run: the summary of every run, the points file as an artifact."""
    from bitcpm.frontend.study import close_sweep

    if sweep.parent_id is None:
        return
    from bitcpm.tracking.client import log_files, open_client
    from bitcpm.windtunnel.tracking import store_uri

    spec = plan.spec  # as tags too: a widened ladder continues its parent run, whose params cannot change
    tags = {"bitcpm.ladder": spec.name, "bitcpm.ladder.widths": ",".join(map(str, spec.widths))}
    close_sweep(sweep, {"points": float(points)}, tags)
    log_files(open_client(store_uri(plan.stable[0].job.tracking)), sweep.parent_id, [points_file], "ladder")


def _print_points(points: list[dict]) -> None:
    from bitcpm.plan.counts import human

    print(f"  {'precision':<16s} {'width':>6s} {'N':>8s} {'D (tokens)':>11s} {'final val loss':>15s}")
    for p in sorted(points, key=lambda p: (p["precision"], p["width"], p["tokens"])):
        n, d = human(p["n"]), human(p["tokens"])
        print(f"  {p['precision']:<16s} {p['width']:>6d} {n:>8s} {d:>11s} {p['loss']:>15.4f}")
