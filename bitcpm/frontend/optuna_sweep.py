"""The body of bitcpm's Optuna sweeper (`-m hydra/sweeper=optuna`): ask a batch, run it through the Launcher, tell.

The search space is written in Hydra's sweep grammar, in `hydra.sweeper.params` or on the command line:
`key=a,b,c` or `choice(a,b)` is categorical; `range(lo,hi[,step])` is a stepped int/float; `interval(lo,hi)` is
a float, `tag(int,interval(lo,hi))` an int, `tag(log,interval(lo,hi))` on a log scale; a plain `key=value` is
fixed for every trial. Each batch of `n_jobs` trials goes to bitcpm's Launcher plugin, so an Optuna study runs
through the same trial runner, run directories, checks and MLflow parent/child runs as a grid multirun.

Samplers: tpe, random, grid. A grid is the queue of its points: Optuna's GridSampler ends the study from inside
tell(), which only works under study.optimize, and ask/tell is what hands batches to a launcher.
Pruning: the median pruner over the validation losses a running trial writes to RUN_DIR/metrics.jsonl; a pruned
trial is sent SIGTERM, saves and exits 75. Storage: optuna.db beside the MLflow sqlite store (else under
train.output_root). A killed sweeper, run again, keeps every finished trial and asks a trial it left running
again with the same values, so that trial's run directory resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitcpm.config.validate import ConfigError

if TYPE_CHECKING:
    from bitcpm.frontend.study import SweepContext

SAMPLERS = ("tpe", "random", "grid")
OBJECTIVES = ("final_val_loss", "best_val_loss")
RESUMES_ATTR = "bitcpm.resumes_trial"
SPACE_ATTR = "bitcpm.space"


@dataclass
class OptunaSettings:
    """`hydra.sweeper.*` of bitcpm's Optuna sweeper."""

    sampler: str = "tpe"
    """tpe, random or grid (every combination of the choices, in order)."""
    seed: int = 0
    """Sampler seed."""
    n_trials: int | None = None
    """Trials the study runs to the end (counting earlier runs of it); default for grid: every point."""
    n_jobs: int = 1
    """Trials asked at once and handed to the launcher as one batch (launcher.max_parallel of them run at once)."""
    study_name: str | None = None
    """The Optuna study and MLflow parent run; default: the chosen sweep=NAME, else 'optuna'."""
    storage: str | None = None
    """Optuna storage URL; default: sqlite optuna.db beside the MLflow sqlite store (else in train.output_root)."""
    objective: str = "final_val_loss"
    """What the study minimises: final_val_loss (the last evaluation) or best_val_loss."""
    prune: bool = True
    """Stop a trial whose validation loss is worse than the median of earlier trials at the same step."""
    prune_startup_trials: int = 2
    """Trials that finish before any trial is pruned."""
    prune_after_step: int = 0
    """No pruning at or before this training step."""
    params: dict[str, str] = field(default_factory=dict)
    """The search space, key -> Hydra sweep expression (the command line's sweep overrides are added)."""


@dataclass(frozen=True)
class Dimension:
    """One searched key: its Optuna distribution and how a value becomes an override."""

    key: str
    distribution: Any
    choices: tuple[Any, ...] = ()
    """Categorical values, in the order given."""
    encoded: tuple[str, ...] = ()
    """The same values as Hydra override text."""

    def override(self, value: Any) -> str:
        """`key=value` as Hydra reads it back."""
        if self.choices:
            return f"{self.key}={self.encoded[self.choices.index(value)]}"
        return f"{self.key}={value}"

    def probes(self) -> list[Any]:
        """Values checked before the first trial starts: every choice, or both ends of a range."""
        if self.choices:
            return list(self.choices)
        return [self.distribution.low, self.distribution.high]


@dataclass
class Space:
    """The searched dimensions and the overrides every trial shares."""

    dimensions: list[Dimension]
    fixed: list[str]

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """One trial's overrides: the fixed ones, then its values."""
        return [*self.fixed, *(d.override(values[d.key]) for d in self.dimensions)]

    def grid(self) -> list[dict[str, Any]]:
        """Every point of an all-categorical space, in order."""
        ranged = [d.key for d in self.dimensions if not d.choices]
        if ranged:
            raise ConfigError(f"hydra.sweeper.sampler=grid: {', '.join(ranged)} is a range; a grid needs choices")
        axes = [d.choices for d in self.dimensions]
        return [dict(zip([d.key for d in self.dimensions], p, strict=True)) for p in itertools.product(*axes)]

    def probe_points(self) -> list[dict[str, Any]]:
        """A point per probe value of each dimension, the others at their first probe."""
        base = {d.key: d.probes()[0] for d in self.dimensions}
        points = [base]
        for d in self.dimensions:
            points += [{**base, d.key: v} for v in d.probes()[1:]]
        return points

    def describe(self) -> dict[str, str]:
        """key -> the distribution in words (MLflow params, the study's fingerprint)."""
        out = {}
        for d in self.dimensions:
            dist = d.distribution
            if d.choices:
                out[d.key] = "choice(" + ",".join(d.encoded) + ")"
            else:
                step = f",step={dist.step}" if getattr(dist, "step", None) not in (None, 1) else ""
                scale = "log," if dist.log else ""
                out[d.key] = f"{type(dist).__name__}({scale}{dist.low},{dist.high}{step})"
        return out


def parse_space(overrides: Sequence[Any]) -> Space:
    """Hydra's parsed overrides -> the search space (ConfigError naming the key of an unsupported sweep)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    latest = {o.get_key_element(): o for o in overrides}  # the command line's value of a key wins over params'
    dims: list[Dimension] = []
    fixed: list[str] = []
    for key, o in latest.items():
        if not o.is_sweep_override():
            fixed.append(f"{key}={o.get_value_element_as_str()}")
            continue
        sweep = o.value()
        if isinstance(sweep, ChoiceSweep):
            values = tuple(o.sweep_iterator())
            texts = tuple(o.sweep_string_iterator())
            if any(not isinstance(v, None | bool | int | float | str) for v in values):
                raise ConfigError(f"{key}: choices must be numbers or strings for Optuna, got {texts}")
            dims.append(Dimension(key, CategoricalDistribution(values), values, texts))
        elif isinstance(sweep, RangeSweep):
            start, stop, step = sweep.start, sweep.stop, sweep.step
            if step <= 0 or stop <= start:
                raise ConfigError(f"{key}=range({start},{stop},{step}): needs start < stop and a positive step")
            if all(isinstance(v, int) for v in (start, stop, step)):
                last = start + (stop - 1 - start) // step * step  # range() excludes stop
                dims.append(Dimension(key, IntDistribution(int(start), int(last), step=int(step))))
            else:
                n = int((stop - start) / step - 1e-9)
                dims.append(Dimension(key, FloatDistribution(float(start), start + n * step, step=float(step))))
        elif isinstance(sweep, IntervalSweep):
            low, high, log = sweep.start, sweep.end, "log" in sweep.tags
            if not low < high or (log and low <= 0):
                raise ConfigError(f"{key}=interval({low},{high}): needs lo < hi (and lo > 0 on a log scale)")
            if "int" in sweep.tags:  # Hydra's interval() always reads floats
                dims.append(Dimension(key, IntDistribution(int(low), int(high), log=log)))
            else:
                dims.append(Dimension(key, FloatDistribution(float(low), float(high), log=log)))
        else:
            raise ConfigError(f"{key}: the Optuna sweeper cannot search {type(sweep).__name__}")
    if not dims:
        raise ConfigError("hydra.sweeper.params: nothing to search (give key=a,b or key=interval(lo,hi))")
    return Space(dims, fixed)


def default_storage(job) -> str:
    """sqlite:///<the MLflow sqlite store's directory>/optuna.db, else <train.output_root>/studies/optuna.db."""
    from bitcpm.tracking.store_uri import resolve_store_uri, sqlite_path

    database = sqlite_path(resolve_store_uri(job.tracking.uri)) if job.tracking.backend == "mlflow" else None
    folder = database.parent if database is not None else Path(job.train.output_root) / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def check_settings(s: OptunaSettings) -> None:
    """One line naming the hydra.sweeper key that is wrong."""
    if s.sampler not in SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler={s.sampler}: expected one of {', '.join(SAMPLERS)}")
    if s.objective not in OBJECTIVES:
        raise ConfigError(f"hydra.sweeper.objective={s.objective}: expected one of {', '.join(OBJECTIVES)}")
    if s.n_trials is None and s.sampler != "grid":
        raise ConfigError(f"hydra.sweeper.n_trials: required with sampler={s.sampler} (how many trials to run)")
    for key in ("n_trials", "n_jobs", "prune_startup_trials", "prune_after_step"):
        value = getattr(s, key)
        low = 0 if key.startswith("prune") else 1
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(f"hydra.sweeper.{key}={value}: expected an integer >= {low}")


class PruneWatch:
    """Reports each running trial's validation losses to Optuna and stops the ones its pruner prunes."""

    def __init__(self) -> None:
        self.trials: dict[int, Any] = {}
        self.reported: dict[int, set[int]] = {}
        self.pruned: set[int] = set()
        self.sizes: dict[int, int] = {}
        """The size of each trial's metrics.jsonl when it was last read: an unchanged file is not read again."""
        self._lock = threading.Lock()  # trials run in threads; one Optuna storage connection at a time

    def should_stop(self, index: int, run_dir: Path) -> bool:
        """New validation losses of trial `index` go to Optuna; True once it is pruned."""
        from bitcpm.training.metrics_log import metric_series

        with self._lock:
            trial = self.trials.get(index)
            if trial is None or index in self.pruned:
                return False
            path = run_dir / "metrics.jsonl"
            size = path.stat().st_size if path.exists() else 0
            if self.sizes.get(index) == size:
                return False
            try:
                series = metric_series(path, "val_loss")
            except ValueError:  # a line the worker is still writing: read it next time
                return False
            self.sizes[index] = size
            seen = self.reported.setdefault(index, set())
            for step, loss in sorted(series.items()):
                if step in seen:
                    continue
                seen.add(step)
                trial.report(loss, step)
                if trial.should_prune():
                    self.pruned.add(index)
                    return True
            return False

    def stopped(self, index: int) -> bool:
        """Whether trial `index` was pruned."""
        return index in self.pruned


def _fingerprint(space: Space, s: OptunaSettings) -> str:
    return json.dumps({"space": space.describe(), "fixed": sorted(space.fixed), "sampler": s.sampler}, sort_keys=True)


def open_study(s: OptunaSettings, space: Space, name: str, storage: str):
    """Create or load the study; a different space under the same name is refused; trials a killed sweeper
    left RUNNING are failed and asked again; a grid's points not yet asked are queued."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=s.seed) if s.sampler == "tpe" else optuna.samplers.RandomSampler(s.seed)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=s.prune_startup_trials, n_warmup_steps=s.prune_after_step)
        if s.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, load_if_exists=True)
    fingerprint = _fingerprint(space, s)
    recorded = study.user_attrs.get(SPACE_ATTR)
    if recorded is None:
        study.set_user_attr(SPACE_ATTR, fingerprint)
    elif recorded != fingerprint:
        raise ConfigError(
            f"hydra.sweeper.study_name={name}: {storage} holds a study of that name over another space or sampler "
            f"({recorded}); give this one another study_name"
        )
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={RESUMES_ATTR: t.number})
    if s.sampler == "grid":
        seen = [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False)]
        for point in space.grid():
            if point not in seen:
                study.enqueue_trial(point)
                seen.append(point)
    return study


def counted(study) -> int:
    """Trials that count toward n_trials: ended ones, less those asked again to resume."""
    from optuna.trial import TrialState

    ended = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    retried = [t for t in study.get_trials(deepcopy=False) if RESUMES_ATTR in t.user_attrs]
    return len(ended) - len(retried)


@dataclass
class Sweep:
    """One run of the sweeper: what it needs from Hydra and the launcher."""

    settings: OptunaSettings
    overrides: list[Any]
    """Hydra's parsed overrides (hydra.sweeper.params and the command line's)."""
    launch: Callable[[list[list[str]], int, SweepContext], Sequence[Any]]
    """Hands a batch to bitcpm's Launcher: (overrides per trial, first index, the study's context) -> JobReturns."""
    plan: Callable[[list[list[str]]], None]
    """Composes and validates trials without running them (ConfigError on a bad one)."""
    base_job: Callable[[list[str]], Any]
    """The composed job of the fixed overrides (for the storage default)."""
    sweep_choice: str | None = None
    """The sweep=NAME config chosen, if any."""


def run_sweep(sw: Sweep) -> None:
    """Run the study until n_trials have ended; TrialsFailed (exit 1) when a trial failed or none completed."""
    from optuna.trial import TrialState

    from bitcpm.frontend.hydra_launch import TrialsFailed
    from bitcpm.frontend.study import SweepContext, close_sweep

    s = sw.settings
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("hydra/sweeper=optuna needs optuna: pip install 'bitcpm[windtunnel]'") from None
    check_settings(s)
    space = parse_space(sw.overrides)
    job = sw.base_job(space.fixed)  # a bad fixed override stops here
    points = space.grid() if s.sampler == "grid" else space.probe_points()
    sw.plan([space.overrides(p) for p in points])  # every grid point, or each value's extremes, before any trial
    total = s.n_trials if s.n_trials is not None else len(points)
    name = s.study_name or sw.sweep_choice or "optuna"
    if job.dry_run:
        print(f"optuna study {name}: {total} trial(s) over {space.describe()}; dry run, nothing started")
        return
    storage = s.storage or default_storage(job)
    study = open_study(s, space, name, storage)
    print(f"optuna study {name}: {counted(study)} of {total} trials already finished (storage {storage})", flush=True)
    watch = PruneWatch() if s.prune else None
    params = {"sampler": s.sampler, "storage": storage, "trials": str(total), "objective": s.objective}
    params.update({f"space.{k}": v for k, v in space.describe().items()})
    study_id = hashlib.sha256(f"{storage}\n{name}".encode()).hexdigest()[:12]
    context = SweepContext(name, study_id, total, params, [d.key for d in space.dimensions], watch=watch)
    distributions = {d.key: d.distribution for d in space.dimensions}
    launched = failed = 0
    stopped = False
    while not stopped and counted(study) < total:
        trials = [study.ask(distributions) for _ in range(min(s.n_jobs, total - counted(study)))]
        context.indices = [t.number for t in trials]
        if watch is not None:
            watch.trials = {t.number: t for t in trials}
        batch = [space.overrides(t.params) for t in trials]
        for t in trials:
            print(f"optuna study {name}: trial {t.number} {t.params}", flush=True)
        results = sw.launch(batch, trials[0].number, context)
        launched += len(trials)
        for t, ret, result in zip(trials, results, context.results[-len(trials) :], strict=True):
            state = _tell(study, t, ret, result.status, s.objective)
            if state == "STOPPED":  # saved on a signal: asked again (and resumed) by the next run
                study.enqueue_trial(t.params, user_attrs={RESUMES_ATTR: t.number})
                stopped = True
            failed += state == "FAIL"
            print(f"optuna study {name}: trial {t.number} {state}", flush=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    print(f"optuna study {name}: launched {launched} trial(s) this time; {len(complete)} complete in the study")
    metrics: dict[str, float | None] = {"trials_complete": float(len(complete))}
    tags: dict[str, str] = {}
    if complete:
        best = study.best_trial
        print(f"optuna study {name}: best trial {best.number}: {s.objective} {best.value:.4f} at {best.params}")
        metrics[f"best_{s.objective}"] = best.value
        tags = {f"best.{k}": str(v) for k, v in best.params.items()}
    close_sweep(context, metrics, tags)
    if stopped:
        raise TrialsFailed(f"optuna study {name}: stopped; run the same command again to resume it")
    if failed or not complete:
        raise TrialsFailed(f"optuna study {name}: {failed} trial(s) failed, {len(complete)} complete")


def _tell(study, trial, ret, status: str, objective: str) -> str:
    """Tell Optuna how a trial ended; returns the state's name."""
    from hydra.core.utils import JobStatus
    from optuna.trial import TrialState

    if status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return "PRUNED"
    if status == "stopped":
        study.tell(trial, state=TrialState.FAIL)
        return "STOPPED"
    losses = ret._return_value if ret.status == JobStatus.COMPLETED else None
    value = getattr(losses, "final" if objective == "final_val_loss" else "best", None)
    if value is None:
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    study.tell(trial, value)
    return f"COMPLETE ({objective} {value:.4f})"
