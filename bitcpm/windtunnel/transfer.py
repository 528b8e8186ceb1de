"""`python -m bitcpm.windtunnel transfer STUDY --target 8b --name NAME`: a study's best base
hyperparameters as an experiment preset for a target size.

muP makes the base hyperparameters (lr, init_std, scale_emb, scale_depth) width-independent: the
model applies the per-tensor rules itself from m = hidden_size / dim_model_base (hidden lr lr/m,
hidden init init_std/sqrt(m), logits /m) and depth through scale_depth/sqrt(L). So the transfer keeps
the base values and the tunnel's dim_model_base (the width the base values are defined at), and
prints what that changes for the target's tensors.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from bitcpm.config.model import ModelConfig

BASE_KEYS = ("optim.lr", "model.init_std", "model.scale_emb", "model.scale_depth", "model.dim_model_base")


def derived(model: ModelConfig, lr: float) -> dict[str, float]:
    """What the muP rules make of the base values on a model: per-tensor numbers actually used."""
    from bitcpm.models.minicpm import mup

    m = mup.width_mult(model)
    return {
        "width multiplier m": m,
        "hidden-matrix lr": lr / m,
        "embedding / norm lr": lr,
        "hidden-matrix init std": mup.hidden_init_std(model),
        "embedding / LM head init std": model.init_std,
        "logit multiplier": 1.0 / m,
        "residual branch scale": mup.residual_scale(model),
        "embedding scale": mup.embedding_scale(model),
    }


def best_base(client, experiment: str, study: str) -> tuple[dict[str, str], str, float]:
    """(params of the study's best trial, its run id, its loss)."""
    from bitcpm.tracking.client import run_params
    from bitcpm.windtunnel.report_command import study_trials

    _, trials, _ = study_trials(client, experiment, study)
    if not trials:
        raise ValueError(f"study {study}: no trial has a validation loss to transfer")
    best = min(trials, key=lambda t: t.loss)
    params = run_params(client, best.run_id)
    if params.get("model.parameterization", "mup") != "mup":
        raise ValueError(f"study {study}: its best trial used model.parameterization=sp; muP transfer needs mup")
    return params, best.run_id, best.loss


def experiment_yaml(target: str, study: str, run_id: str, loss: float, values: dict[str, str], train: str) -> str:
    """The experiment preset's text (package _global_, so it can override any group)."""
    lines = [
        "# @package _global_",
        f"# Base hyperparameters from wind-tunnel study '{study}' (best trial: MLflow run {run_id},",
        f"# validation loss {loss:.4f}), transferred to model={target} by the muP rules",
        f"# (python -m bitcpm.windtunnel transfer). Train with: {train}",
        "defaults:",
        f"  - override /model: {target}",
        "",
        f"experiment_name: {train.rsplit('=', 1)[-1]}",
    ]
    groups: dict[str, list[str]] = {}
    for key in BASE_KEYS:
        group, field = key.split(".", 1)
        groups.setdefault(group, []).append(f"  {field}: {values[key]}")
    groups.setdefault("model", []).append("  parameterization: mup")
    for group, fields in groups.items():
        lines += [f"{group}:", *fields]
    return "\n".join(lines) + "\n"


def _number(text: str) -> str:
    value = float(text)
    return str(int(value)) if value.is_integer() and "." not in text and "e" not in text else repr(value)


def run_transfer(study: str, target: str, name: str, config_dir: Path | None, force: bool, overrides: list[str]) -> int:
    """Write <config dir>/experiment/<name>.yaml, print the changes, check it composes and validates."""
    from bitcpm.frontend.compose import CommandLine, compose_job
    from bitcpm.presets import conf_dir
    from bitcpm.tracking.client import open_client
    from bitcpm.windtunnel.report_command import study_store
    from bitcpm.windtunnel.tracking import experiment_name

    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--name={name}: use letters, digits, '-' and '_' only")
    folder = (config_dir or conf_dir()) / "experiment"
    path = folder / f"{name}.yaml"
    if path.exists() and not force:
        raise ValueError(f"--name={name}: {path} exists (pass --force to overwrite)")
    job = compose_job(CommandLine(), overrides, check_rules=False)
    given = CommandLine(config_dirs=[str(config_dir)] if config_dir and config_dir.is_dir() else [])
    try:  # the target preset (the shipped ones, or the user's), before the store is read
        before = compose_job(given, [f"model={target}"], check_rules=False)
    except Exception as exc:
        from bitcpm.config.errors import ConfigError
        from bitcpm.frontend.compose import one_line_error

        raise ConfigError(f"--target={target}: {one_line_error(exc)}") from None
    client = open_client(study_store(job.tracking))
    params, run_id, loss = best_base(client, experiment_name(job.tracking), study)
    values = {key: _number(params[key]) for key in BASE_KEYS}
    created = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)  # the top-most new one
    folder.mkdir(parents=True, exist_ok=True)
    flag = f"--config-dir {config_dir} " if config_dir else ""
    train = f"python -m bitcpm.train {flag}experiment={name}"
    path.write_text(experiment_yaml(target, study, run_id, loss, values, train))
    cmd = CommandLine(config_dirs=[str(config_dir)] if config_dir else [])
    try:
        after = compose_job(cmd, [f"experiment={name}"])
    except Exception:
        path.unlink()  # never leave a preset behind that does not validate
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    print(f"transfer {study} -> model={target}: wrote {path}")
    print(f"  base values from trial run {run_id} (validation loss {loss:.4f}, width {params['model.hidden_size']})")
    _print_changes(before, after)
    print(f"train with: {train}")
    return 0


def _print_changes(before, after) -> None:
    rows = [
        ("optim.lr", before.optim.lr, after.optim.lr),
        *((f"model.{k}", getattr(before.model, k), getattr(after.model, k)) for k in ("init_std", "scale_emb")),
        *((f"model.{k}", getattr(before.model, k), getattr(after.model, k)) for k in ("scale_depth", "dim_model_base")),
    ]
    print(f"  {'key':32s} {'preset':>12s} {'transferred':>12s}")
    for key, old, new in rows:
        mark = "" if math.isclose(float(old), float(new)) else "  (changed)"
        print(f"  {key:32s} {old:>12.6g} {new:>12.6g}{mark}")
    old_d, new_d = derived(before.model, before.optim.lr), derived(after.model, after.optim.lr)
    print("  what the muP rules make of them on this model:")
    for key in new_d:
        mark = "" if math.isclose(old_d[key], new_d[key]) else "  (changed)"
        print(f"  {key:32s} {old_d[key]:>12.6g} {new_d[key]:>12.6g}{mark}")
