"""Every check that needs no torch, run on each job (and each multirun or pipeline member) before launch.

Order: value ranges and choices of every key (bitcpm.config.ranges), the cross-group rules
(bitcpm.config.validate), then what lies outside the config: a Hugging Face stage.init_from against the
model, optional packages the job needs, data inputs (whole jsonl files), the directories it writes, the
tokenizer and the checkpoints a stage starts from (complete, of a fitting model, files intact; a decay branch's
source run the same training but for its length and decay). Each failure is one ConfigError line naming the
key. Hardware stacks (CUDA, torch_npu, MindSpeed) are checked where the job runs instead.

These checks read files through data/ and models/, so they belong to the front end: config/ holds the
rules about the config's values alone.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from omegaconf import OmegaConf

from bitcpm.config.checkpoint_manifest import DamagedCheckpointError, Verdict, accept, verify
from bitcpm.config.checkpoints import COMPLETE, complete_checkpoint, complete_step_checkpoint
from bitcpm.config.errors import ConfigError, parse_tokens
from bitcpm.config.load import load_job
from bitcpm.config.root import JobConfig
from bitcpm.config.validate import validate

# Keys that fix the shape of every weight: a checkpoint loads into the job only if they agree.
MODEL_SHAPE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_attention_heads",
    "num_kv_heads",
    "head_dim",
    "vocab_size",
    "tie_embeddings",
)


def missing_extra(module: str, extra: str, needed_by: str) -> ConfigError | None:
    """An error naming the pip extra to install when `module` cannot be imported."""
    if importlib.util.find_spec(module) is not None:
        return None
    return ConfigError(f"{needed_by} needs the {module} package: pip install 'bitcpm[{extra}]'")


def check_extras(job: JobConfig) -> None:
    """Optional packages the chosen launcher and tracking backend import are installed."""
    lc = job.launcher
    needs = [] if job.dry_run else [(module, extra, lc.label()) for module, extra in lc.packages()]
    if job.tracking.backend == "mlflow":
        needs.append(("mlflow", "mlflow", "tracking=mlflow"))
    for module, extra, needed_by in needs:
        error = missing_extra(module, extra, needed_by)
        if error is not None:
            raise error


def check_hf_init_from(job: JobConfig) -> None:
    """stage.init_from naming a Hugging Face checkpoint: it must fit the model (headers only, no torch)."""
    from bitcpm.models.minicpm.hf_checkpoint import is_hf_checkpoint

    if not is_hf_checkpoint(job.stage.init_from):
        return
    from bitcpm.models.minicpm.hf_check import HFCheckError, check_hf_init

    if parse_tokens(job.stage.tokens) == "auto":
        raise ConfigError(
            "stage.tokens=auto needs a bitcpm run as stage.init_from (a Hugging Face checkpoint has no schedule)"
        )
    try:
        check_hf_init(job.model, str(job.stage.init_from))
    except HFCheckError as exc:
        raise ConfigError(str(exc)) from None


def check_data_inputs(job: JobConfig) -> None:
    """Every data source's inputs are whole jsonl files of data.text_key texts (or the built-in corpus), with
    documents enough for a validation split (bitcpm.data.sources.check_jsonl: small files are read whole)."""
    from bitcpm.data.sources import check_jsonl

    for i, source in enumerate(job.data.sources):
        counts = []
        for name in source.inputs:
            if name != "builtin" and not Path(name).exists():
                raise ConfigError(f"data.sources[{i}].inputs: {name} not found (a jsonl file, .gz/.xz, or builtin)")
            try:
                counts.append(check_jsonl(name, job.data.text_key))
            except ValueError as exc:
                raise ConfigError(f"data.sources[{i}].inputs: {exc}") from None
        if source.inputs and None not in counts and sum(counts) < 2:
            raise ConfigError(
                f"data.sources[{i}].inputs: {sum(counts)} document(s) in {', '.join(source.inputs)}; the "
                f"validation split (data.valid_fraction={job.data.valid_fraction}) needs at least 2"
            )


def check_output_dirs(job: JobConfig) -> None:
    """The directories a job writes into are directories (or can be created)."""
    from bitcpm.config.arguments import output_dir

    for key, value in (("train.output_root", job.train.output_root), ("data.cache_dir", job.data.cache_dir)):
        try:
            output_dir(value)
        except ValueError as exc:
            raise ConfigError(f"{key}={value}: {exc}") from None


def check_megatron_data(job: JobConfig) -> None:
    """Existing Megatron-LM datasets (data.sources[i].megatron_prefix) are there, are megatron indexes and, where
    scanned before, hold token ids that fit model.vocab_size (headers and the scan cache only: no torch)."""
    from bitcpm.data.megatron_index import preflight_sources

    try:
        preflight_sources(job.data, job.model.vocab_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_tokenizer(job: JobConfig) -> None:
    """The tokenizer loads and its ids fit the model's embedding rows."""
    from bitcpm.data.tokenizer import load_tokenizer

    try:
        tokenizer = load_tokenizer(job.data.tokenizer)
    except (ValueError, OSError, ImportError) as exc:
        raise ConfigError(f"data.tokenizer={job.data.tokenizer}: {_one_line(exc)}") from None
    except Exception as exc:  # a corrupt tokenizer.json surfaces as the library's own exception type
        raise ConfigError(f"data.tokenizer={job.data.tokenizer}: cannot be loaded ({_one_line(exc)})") from None
    if tokenizer.vocab_size > job.model.vocab_size:
        raise ConfigError(
            f"data.tokenizer={job.data.tokenizer}: its {tokenizer.vocab_size} token ids do not fit "
            f"model.vocab_size={job.model.vocab_size}"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _stored_model(key: str, value: str, checkpoint: Path) -> dict:
    config = checkpoint.parent.parent / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{key}={value}: {config} not found (is it a bitcpm run?)")
    try:
        load_job(config)  # the whole file types as a job (a truncated one may still parse as YAML)
        stored = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
    except Exception as exc:  # a truncated or hand-edited file: say which one
        raise ConfigError(f"{key}={value}: cannot read {config} ({_one_line(exc)})") from None
    model = stored.get("model") if isinstance(stored, dict) else None
    if not isinstance(model, dict):
        raise ConfigError(f"{key}={value}: {config} has no model section")
    return model


# A multirun's members usually share their init_from: its files are hashed once per front-end process.
_verdicts: dict[Path, Verdict] = {}


def check_intact(key: str, value: str, checkpoint: Path) -> None:
    """The checkpoint's files match its manifest (a note, once, when it predates manifests)."""
    verdict = _verdicts.get(checkpoint.resolve())
    if verdict is None:
        verdict = _verdicts[checkpoint.resolve()] = verify(checkpoint)
    try:
        accept(verdict, f"{key}={value}")
    except DamagedCheckpointError as exc:
        raise ConfigError(str(exc)) from None


# What a decay branch may change against the run it continues: its length and the decay (and what names the run).
BRANCH_FREE = {"train.steps", "stage.tokens", "stage.init_from", "stage.branch_step"}
BRANCH_FREE |= {"optim.decay_fraction", "optim.decay_style", "optim.decay_half_life", "optim.min_lr_ratio"}


def _source_job(config: Path) -> JobConfig:
    """The config.yaml of the run stage.init_from names, as a job."""
    try:
        return load_job(config)
    except Exception as exc:  # a foreign or damaged file: say which one
        raise ConfigError(f"stage.init_from: cannot read {config} ({_one_line(exc)})") from None


def check_stream_source(job: JobConfig, config: Path) -> None:
    """A start from a chosen step (stage.init_step) reads the source's data on: the same windows and batch."""
    stored = _source_job(config)
    for key, theirs, ours in (
        ("train.seq_length", stored.train.seq_length, job.train.seq_length),
        ("parallel.global_batch_size", stored.parallel.global_batch_size, job.parallel.global_batch_size),
    ):
        if theirs != ours:
            raise ConfigError(
                f"stage.init_step: the source run {config.parent} has {key}={theirs}, this job {ours}: the data goes "
                "on from the source's position only with the same sequences and batch"
            )


def check_branch_source(job: JobConfig, config: Path) -> None:
    """A decay branch continues the same training: its source run differs only in length and decay."""
    from bitcpm.frontend.rundir import math_relevant

    stored = _source_job(config)
    ours, theirs = _flat(math_relevant(job)), _flat(math_relevant(stored))
    for key in sorted(set(ours) | set(theirs)):
        if key not in BRANCH_FREE and ours.get(key) != theirs.get(key):
            raise ConfigError(
                f"stage.branch_step: the source run {config.parent} has {key}={theirs.get(key)}, this job "
                f"{ours.get(key)}: a branch changes only the length and the decay"
            )
    source_steps = stored.train.steps
    flat_until = source_steps - math.floor(stored.optim.decay_fraction * source_steps)
    if job.stage.branch_step > flat_until:
        raise ConfigError(
            f"stage.branch_step={job.stage.branch_step}: the source run {config.parent} decays its lr from step "
            f"{flat_until}: branch from a stable phase (optim.decay_fraction=0 there)"
        )


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_checkpoints(job: JobConfig, planned_runs: frozenset[Path] = frozenset()) -> None:
    """init_from and teacher_from name complete, intact checkpoints whose stored model fits this job."""
    from bitcpm.models.minicpm.hf_checkpoint import is_hf_checkpoint  # torch-free; models import config

    planned = {p.resolve() for p in planned_runs}
    for key, value in (("stage.init_from", job.stage.init_from), ("stage.teacher_from", job.stage.teacher_from)):
        if not value or Path(value).resolve() in planned:
            continue  # unset, or an earlier pipeline stage will write it
        if key == "stage.init_from" and is_hf_checkpoint(value):
            continue  # a Hugging Face directory: check_hf_init_from reads its config and headers
        path = Path(value)
        if not path.exists():
            raise ConfigError(f"{key}={value}: no such checkpoint or run directory")
        branch = job.stage.branch_step if key == "stage.init_from" else None
        start = job.stage.init_step if key == "stage.init_from" else None
        if branch is not None:
            checkpoint = complete_step_checkpoint(value, branch, "stage.branch_step")
        elif start is not None:
            checkpoint = complete_step_checkpoint(value, start, "stage.init_step")
        else:
            checkpoint = complete_checkpoint(path)
        if checkpoint is None:
            raise ConfigError(f"{key}={value}: no complete checkpoint there (no {COMPLETE} marker)")
        if branch is not None:
            check_branch_source(job, checkpoint.parent.parent / "config.yaml")
        if start is not None:
            check_stream_source(job, checkpoint.parent.parent / "config.yaml")
        stored = _stored_model(key, value, checkpoint)
        # The teacher may be any size; it only has to share the vocabulary with the student.
        keys = MODEL_SHAPE_KEYS if key == "stage.init_from" else ("vocab_size",)
        ours = OmegaConf.to_container(OmegaConf.structured(job.model))
        for name in keys:
            if stored.get(name) != ours.get(name):
                raise ConfigError(
                    f"{key}={value}: its model.{name}={stored.get(name)} differs from this job's "
                    f"model.{name}={ours.get(name)}"
                )
        check_intact(key, value, checkpoint)  # last: it reads every file, the checks above only the config


def preflight(job: JobConfig, planned_runs: frozenset[Path] = frozenset()) -> None:
    """Run every pre-launch check; raise ConfigError (one line, naming the key) on the first failure."""
    validate(job)  # the per-leaf ranges first, then the rules across keys
    check_hf_init_from(job)
    check_extras(job)
    check_output_dirs(job)
    check_megatron_data(job)  # first: a source that names both inputs and a prefix is refused as such
    check_data_inputs(job)
    check_tokenizer(job)
    check_checkpoints(job, planned_runs)
