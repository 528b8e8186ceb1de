"""`python -m bitcpm.train` is a Hydra app: Hydra parses the command line, bitcpm plans and launches.

Everything on the command line keeps Hydra's meaning (-m, --cfg job --resolve, --config-dir, --config-path,
--config-name, --help, --version, hydra.* overrides, sweeper plugins). A single run reaches the task
function below; a multirun reaches bitcpm's Launcher plugin (hydra_plugins/bitcpm_launcher) with its whole
batch. Errors of composition or validation, from either, end as one line and exit code 2: Hydra is told to
raise them (HYDRA_FULL_ERROR) and they are turned into a line here instead of a traceback wall.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from omegaconf import DictConfig

from bitcpm.frontend.compose import CONFIG_NAME, CommandLine, one_line_error

EXIT_CONFIG = 2
EXIT_TRIALS_FAILED = 1
_LAUNCHED = {"single": False}  # set once a single run passed planning: later errors are not config errors


def error_exit(message: str) -> int:
    """Print a one-line error and return the exit code for a bad configuration."""
    print(f"bitcpm: error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def run_task(cfg: DictConfig) -> int:
    """A single run (no -m): compose + validate + plan (exit 2 on a bad config), then launch."""
    from hydra.core.hydra_config import HydraConfig

    from bitcpm.frontend.launch import memory_refusal, print_plans, run_single
    from bitcpm.frontend.members import plan_members

    hc = HydraConfig.get()
    cmd = CommandLine(
        overrides=[str(o) for o in hc.overrides.task],
        config_name=str(hc.job.config_name),
        hydra_app=True,
        hydra_overrides=[str(o) for o in hc.overrides.hydra],
    )
    try:
        member = plan_members(cmd, [cmd.overrides])[0]
    except Exception as exc:  # raised out of the task, Hydra would print its own lines first
        return error_exit(one_line_error(exc))
    print_plans([member])
    refusal = memory_refusal([member])
    if refusal is not None:
        return error_exit(refusal)
    _LAUNCHED["single"] = True
    return run_single(member)


def check_command_line_types(argv: list[str]) -> None:
    """Type-check the command line's overrides before Hydra merges them (Hydra's merge errors lose the key).

    Hydra's own argument parser separates the overrides (a malformed command line is one line here, not Hydra's
    usage block); sweep values are checked per member later.
    """
    from hydra._internal.utils import get_args_parser

    from bitcpm.config.errors import ConfigError
    from bitcpm.config.root import JobConfig
    from bitcpm.config.typecheck import check_override_types

    if "--version" in argv:  # argparse would print it here, and Hydra again
        return
    parser = get_args_parser()

    def refuse(message: str) -> NoReturn:  # argparse would print Hydra's whole usage block first
        raise ConfigError(" ".join(message.split()))

    parser.error = refuse  # type: ignore[method-assign]
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help and friends: Hydra answers them below
        return
    check_override_types(list(args.overrides or []), JobConfig)
    if args.multirun:  # Hydra's sweeper writes into train.output_root/multirun before any member is checked
        from bitcpm.config.arguments import output_dir

        for override in args.overrides or []:
            key, _, value = override.partition("=")
            if key == "train.output_root" and "," not in value:
                try:
                    output_dir(value)
                except ValueError as exc:
                    raise ConfigError(f"train.output_root={value}: {exc}") from None


def run(argv: list[str]) -> int:
    """Run Hydra on argv; returns the process exit code."""
    import hydra

    from bitcpm.config.store import register_schema
    from bitcpm.frontend.hydra_launch import TrialsFailed, discard_unstarted, study_started
    from bitcpm.frontend.plugins import expose_hydra_plugins
    from bitcpm.frontend.sweeps import register_sweeps
    from bitcpm.presets import conf_dir

    expose_hydra_plugins()
    register_schema()
    register_sweeps()
    try:
        check_command_line_types(argv)
    except Exception as exc:
        return error_exit(one_line_error(exc))
    outcome = {"code": 0}
    _LAUNCHED["single"] = False

    @hydra.main(config_path=str(conf_dir()), config_name=CONFIG_NAME, version_base=None)
    def task(cfg: DictConfig) -> None:
        outcome["code"] = run_task(cfg)

    saved_argv, saved_flag = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [saved_argv[0] if saved_argv else "bitcpm.train", *argv]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        task()
    except SystemExit as exc:  # --help, --version, argparse errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_CONFIG)
    except TrialsFailed as exc:
        print(f"bitcpm: {exc}", file=sys.stderr)  # the study's summary above lists each trial
        return EXIT_TRIALS_FAILED
    except Exception as exc:
        if study_started() or _LAUNCHED["single"]:
            raise  # a crash while a job runs is not a configuration error: keep its traceback
        discard_unstarted()
        return error_exit(one_line_error(exc))
    finally:
        sys.argv = saved_argv
        if saved_flag is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_flag
    return outcome["code"]
