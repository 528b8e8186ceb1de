"""A scaling ladder's runs, planned from its spec before anything trains: which exist, which are finished, which to run.

Each (width, precision) rung is one warmup-stable run (optim.decay_fraction=0) as long as the rung's largest branch
point, checkpointed at every branch point. Each token budget of T steps is a decay branch: a run of T steps with the
ladder's decay fraction f that starts from the stable run's checkpoint at step k = T - floor(f T) (stage.init_from =
the stable run directory, stage.branch_step = k), where that schedule's decay begins. The worker carries over the
weights, the optimizer state, the step and the data position, so the branch is the same training as a plain WSD run
of T steps (a preflight check holds the two runs to the same settings but for length and decay); one stable run
yields a (N, D, loss) point per budget for the price of its decays.

Run directories are keyed by the math as for every bitcpm run (frontend/rundir.py): a branch's key holds its stable
run's directory (its hash), its branch step and its length, so re-planning finds every run that finished before,
and adding a width adds only that width's runs. A longer largest budget makes longer (new) stable runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bitcpm.config.root import JobConfig
from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.rundir import run_dir_for
from bitcpm.training.finished_marker import FINISHED_MARKER
from bitcpm.windtunnel.widths import width_overrides

FAMILY = (
    "data=tunnel",
    "model.vocab_size=512",
    "model.num_layers=2",
    "model.dim_model_base=32",
    "train.seq_length=128",
    "train.eval_interval=0",
    "train.eval_batches=8",
    "tracking.experiment=windtunnel",
)
"""The default ladder family (extra overrides change it): muP widths of a 2-layer model on the built-in corpus with
the 512-token tokenizer (README, Data), so that the embedding does not dominate the parameter count."""
MAX_CHECKPOINTS = 64
"""Most checkpoints a stable run keeps to serve its branch points (choose budgets with a common divisor)."""


def branch_step(steps: int, decay_fraction: float) -> int:
    """Where a WSD run of `steps` steps starts decaying (training.schedule.WSDSchedule's decay_start)."""
    return steps - math.floor(decay_fraction * steps)


@dataclass(frozen=True)
class LadderSpec:
    """What a ladder is: its widths, precisions, token budgets (in steps), decay fraction and family overrides."""

    name: str
    widths: tuple[int, ...]
    precisions: tuple[str, ...]
    """quant presets: none (full precision), ternary_g64, ..."""
    steps: tuple[int, ...]
    """Each branch's length in optimizer steps (its token budget over the tokens per step)."""
    decay_fraction: float = 0.2
    head_dim: int = 16
    overrides: tuple[str, ...] = FAMILY

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"--name={self.name}: use letters, digits, '-' and '_' only")
        if not 0 < self.decay_fraction < 1:
            raise ValueError(f"--decay-fraction={self.decay_fraction}: expected a fraction in (0, 1)")
        if len(set(self.steps)) != len(self.steps) or min(self.steps, default=0) < 2:
            raise ValueError(f"--steps={','.join(map(str, self.steps))}: expected distinct budgets of >= 2 steps")
        if not self.widths or not self.precisions:
            raise ValueError("a ladder needs at least one width and one precision")
        points = [branch_step(t, self.decay_fraction) for t in self.steps]
        if min(points) < 1 or any(k == t for k, t in zip(points, self.steps, strict=True)):
            raise ValueError(
                f"--steps: each budget needs a stable part and a decay at --decay-fraction={self.decay_fraction}"
            )

    @property
    def branch_points(self) -> dict[int, int]:
        """Budget (steps) -> the stable step its branch starts from."""
        return {t: branch_step(t, self.decay_fraction) for t in sorted(self.steps)}

    @property
    def stable_steps(self) -> int:
        """Length of every stable run: the last branch point."""
        return max(self.branch_points.values())

    @property
    def save_interval(self) -> int:
        """Checkpoint cadence of the stable runs: every branch point is a multiple of it."""
        return math.gcd(*self.branch_points.values())

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> LadderSpec:
        """Back from to_dict."""
        tuples = {k: tuple(data[k]) for k in ("widths", "precisions", "steps", "overrides")}
        return cls(**{**data, **tuples})


@dataclass
class Rung:
    """One run of the ladder: a stable run or a decay branch."""

    kind: str
    """'stable' or 'branch'."""
    width: int
    precision: str
    steps: int
    """The run's length (a branch: its budget)."""
    overrides: list[str]
    job: JobConfig
    run_dir: Path
    branch_step: int | None = None

    @property
    def finished(self) -> bool:
        """The worker marked the run finished."""
        return (self.run_dir / FINISHED_MARKER).exists()

    @property
    def final_loss(self) -> float | None:
        """The final validation loss the worker recorded at the end, None before."""
        marker = self.run_dir / FINISHED_MARKER
        if not marker.exists():
            return None
        value = json.loads(marker.read_text()).get("val_loss")
        return float(value) if value is not None else None


@dataclass
class LadderPlan:
    """Every run of a ladder, planned."""

    spec: LadderSpec
    stable: list[Rung] = field(default_factory=list)
    branches: list[Rung] = field(default_factory=list)

    @property
    def runs(self) -> list[Rung]:
        """Stable runs first, then branches."""
        return [*self.stable, *self.branches]

    def todo(self) -> list[Rung]:
        """The runs that have not finished."""
        return [r for r in self.runs if not r.finished]


def family_model(spec: LadderSpec, cmd: CommandLine):
    """The model of the family's overrides: its depth, head ratio and MLP ratio hold at every width."""
    return compose_job(cmd, list(spec.overrides), check_rules=False).model


def rung_model(spec: LadderSpec, base, width: int) -> list[str]:
    """The model overrides of one width of the family."""
    return width_overrides(base, width, spec.head_dim)


def stable_overrides(spec: LadderSpec, model: list[str], precision: str) -> list[str]:
    """A rung's stable run: warmup then a constant lr to the last branch point, a checkpoint at each."""
    interval = spec.save_interval
    return [
        *spec.overrides,
        *model,
        f"quant={precision}",
        "optim.decay_fraction=0",
        f"train.steps={spec.stable_steps}",
        f"train.save_interval={interval}",
        f"train.keep_checkpoints={spec.stable_steps // interval}",
    ]


def branch_overrides(spec: LadderSpec, model: list[str], precision: str, stable_dir: Path, steps: int) -> list[str]:
    """A decay branch: a WSD run of `steps` steps that starts at its decay from the stable run's checkpoint."""
    return [
        *spec.overrides,
        *model,
        f"quant={precision}",
        f"optim.decay_fraction={spec.decay_fraction}",
        f"train.steps={steps}",
        f"stage.init_from={stable_dir}",
        f"stage.branch_step={spec.branch_points[steps]}",
    ]


def plan_ladder(spec: LadderSpec, cmd: CommandLine | None = None) -> LadderPlan:
    """Compose and check every run of the ladder (nothing is written)."""
    from bitcpm.config.validate import ConfigError

    cmd = cmd or CommandLine()
    if spec.stable_steps // spec.save_interval > MAX_CHECKPOINTS:
        points = ", ".join(map(str, spec.branch_points.values()))
        raise ValueError(
            f"--steps: the branch points {points} share the divisor {spec.save_interval} only: a stable run would "
            f"keep {spec.stable_steps // spec.save_interval} checkpoints (choose budgets like 100,200,400)"
        )
    plan = LadderPlan(spec)
    base = family_model(spec, cmd)
    for precision in spec.precisions:
        for width in spec.widths:
            model = rung_model(spec, base, width)
            overrides = stable_overrides(spec, model, precision)
            job = _compose(cmd, overrides, f"width {width}, {precision}, stable run")
            stable = Rung("stable", width, precision, spec.stable_steps, overrides, job, run_dir_for(job))
            plan.stable.append(stable)
            # An unfinished stable run's checkpoints are not there yet: its branches are checked when they start.
            planned = frozenset() if stable.finished else frozenset({stable.run_dir})
            for steps, k in spec.branch_points.items():
                overrides = branch_overrides(spec, model, precision, stable.run_dir, steps)
                job = _compose(cmd, overrides, f"width {width}, {precision}, budget {steps} steps", planned)
                plan.branches.append(Rung("branch", width, precision, steps, overrides, job, run_dir_for(job), k))
    labels = {r.job.quant.label for r in plan.stable}
    if len(labels) != len(spec.precisions):
        raise ConfigError(f"--precisions={','.join(spec.precisions)}: two of them are the same quantizer")
    return plan


def _compose(cmd: CommandLine, overrides: list[str], what: str, planned: frozenset[Path] = frozenset()) -> JobConfig:
    from bitcpm.config.validate import ConfigError
    from bitcpm.frontend.compose import one_line_error

    try:
        return compose_job(cmd, overrides, planned_runs=planned)
    except Exception as exc:  # any composition error: one line naming the run
        raise ConfigError(f"ladder {what}: {one_line_error(exc)}") from None


def ladder_dir(job: JobConfig, name: str) -> Path:
    """Where a ladder keeps its spec, its points and its predictions: <train.output_root>/ladders/<name>."""
    return Path(job.train.output_root) / "ladders" / name
