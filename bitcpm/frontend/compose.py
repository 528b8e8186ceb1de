"""Hydra composition of one job with one-line errors: the single compose + validate step of every job.

Inside the running Hydra app (`python -m bitcpm.train`, single run or multirun) jobs are composed by the app's
own config loader, so --config-path, --config-dir, --config-name and hydra.* overrides mean what they mean in
Hydra; outside it (tests, tools) the shipped conf/ is composed through Hydra's Compose API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from bitcpm.config.root import JobConfig

CONFIG_NAME = "train"


@dataclass
class CommandLine:
    """bitcpm's view of a Hydra command line."""

    overrides: list[str] = field(default_factory=list)
    config_dirs: list[str] = field(default_factory=list)
    config_name: str = CONFIG_NAME
    multirun: bool = False
    hydra_only: bool = False
    """--cfg / --help / --info / --hydra-help / -p: Hydra answers, nothing is launched."""
    hydra_app: bool = False
    """Compose with the running Hydra app's config loader (its search path) instead of the Compose API."""
    hydra_overrides: list[str] = field(default_factory=list)
    """The command line's hydra.* overrides, applied again to every job composed in the app."""


_FLAGS_WITH_VALUE = {
    "--config-dir",
    "-cd",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--experimental-rerun",
}
_HYDRA_ONLY = {
    "--cfg",
    "-c",
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--package",
    "-p",
    "--shell-completion",
    "-sc",
}


def parse_command_line(argv: list[str]) -> CommandLine:
    """Separate Hydra's flags from the overrides (enough of Hydra's grammar for validation)."""
    out = CommandLine()
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, _, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in ("-m", "--multirun"):
            out.multirun = True
        elif name in _HYDRA_ONLY or arg in _HYDRA_ONLY:
            out.hydra_only = True
            if name in ("--cfg", "-c", "--package", "-p") and not inline and i + 1 < len(argv):
                i += 1
            if name in ("--info", "-i") and not inline and i + 1 < len(argv) and "=" not in argv[i + 1]:
                i += 1
        elif name in _FLAGS_WITH_VALUE:
            value = inline or (argv[i + 1] if i + 1 < len(argv) else "")
            if not inline:
                i += 1
            if name in ("--config-dir", "-cd"):
                out.config_dirs.append(str(Path(value).resolve()))
            elif name in ("--config-name", "-cn"):
                out.config_name = value
        elif arg == "--resolve":
            pass
        else:
            out.overrides.append(arg)
        i += 1
    return out


def compose_config(cmd: CommandLine, overrides: list[str]) -> DictConfig:
    """Compose conf/train.yaml (plus user --config-dir search paths) with the overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bitcpm.config.store import register_schema
    from bitcpm.frontend.plugins import expose_hydra_plugins
    from bitcpm.frontend.sweeps import register_sweeps
    from bitcpm.presets import conf_dir

    expose_hydra_plugins()
    register_schema()
    register_sweeps()
    if cmd.hydra_app and GlobalHydra.instance().is_initialized():
        return _compose_in_app(cmd, overrides)
    extra = list(overrides)
    if cmd.config_dirs:
        paths = ",".join(f"file://{d}" for d in cmd.config_dirs)
        extra.append(f"hydra.searchpath=[{paths}]")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose(config_name=cmd.config_name, overrides=extra)


def _compose_in_app(cmd: CommandLine, overrides: list[str]) -> DictConfig:
    """What Hydra's own launchers do for each job: the app's loader, its hydra.* overrides, then the job's."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import open_dict

    loader = GlobalHydra.instance().config_loader()
    cfg = loader.load_configuration(
        config_name=cmd.config_name, overrides=[*cmd.hydra_overrides, *overrides], run_mode=RunMode.RUN
    )
    with open_dict(cfg):
        del cfg["hydra"]  # the job sees its own config only, as a Hydra task function does
    return cfg


def compose_job(
    cmd: CommandLine, overrides: list[str], check_rules: bool = True, planned_runs: frozenset[Path] = frozenset()
) -> JobConfig:
    """Compose and type-check one job; check_rules also runs every pre-launch check (bitcpm.frontend.preflight).

    planned_runs: run directories an earlier pipeline stage will create (their checkpoints do not exist yet).
    """
    from bitcpm.config.load import to_job
    from bitcpm.config.typecheck import check_override_types
    from bitcpm.frontend.preflight import preflight

    check_override_types(overrides, JobConfig)
    job = to_job(compose_config(cmd, overrides))
    if check_rules:
        preflight(job, planned_runs)  # ranges, cross-group rules, then files, tokenizer, checkpoints, extras
    return job


def one_line_error(exc: BaseException) -> str:
    """Turn Hydra/OmegaConf composition errors into a single line that names the key."""
    from bitcpm.config.validate import ConfigError

    if isinstance(exc, ConfigError):
        return str(exc)
    messages = []
    e: BaseException | None = exc
    while e is not None:
        messages.append(str(e))
        e = e.__cause__ or e.__context__
    text = "\n".join(messages)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        hint = f" (available: {', '.join(options)})" if options else ""
        return f"{group}={option}: no such option in conf/{group}/{hint}"
    full_key = re.search(r"full_key: (\S+)", text)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    for pattern, fmt in (
        (r"Key '([^']+)' is not in struct", "{key}: unknown key"),
        (
            r"Could not override '([^']+)'",
            "{key}: unknown key (add it with +{key}=... only if the schema allows)",
        ),
        (r"Missing mandatory value: (\S+)", "{key}: a value is required"),
    ):
        m = re.search(pattern, text)
        if m:
            key = full_key.group(1) if full_key and "not in struct" in pattern else m.group(1)
            return fmt.format(key=key)
    detail = next(
        (ln.strip() for ln in text.splitlines() if "could not be converted" in ln or "Invalid value" in ln),
        None,
    )
    if full_key and detail:
        return f"{full_key.group(1)}: {detail}"
    if full_key:
        return f"{full_key.group(1)}: {first}"
    return first
