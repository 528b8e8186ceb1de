"""The Optuna sweeper's search space (Hydra's sweep grammar -> Optuna distributions), its settings' checks, and its
bad input through the front door: one line naming the key, exit 2, nothing written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("optuna")  # the sweeper's extra (bitcpm[windtunnel]); the lowest-versions job has no optuna
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402

from bitcpm.config.validate import ConfigError  # noqa: E402
from bitcpm.frontend.optuna_sweep import OptunaSettings, check_settings, parse_space  # noqa: E402

pytestmark = pytest.mark.quick


def space(*overrides: str):
    return parse_space(OverridesParser.create().parse_overrides(list(overrides)))


def test_hydra_sweep_grammar_becomes_optuna_distributions() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    s = space(
        "optim.lr=tag(log,interval(1e-3,1e-1))",
        "model.hidden_size=64,128",
        "train.seed=range(0,10,3)",
        "model.scale_emb=tag(int,interval(1,24))",
        "model.scale_depth=choice(0.5,1.4)",
        "quant=none",
    )
    dists = {d.key: d.distribution for d in s.dimensions}
    assert dists["optim.lr"] == FloatDistribution(1e-3, 1e-1, log=True)
    assert dists["model.hidden_size"] == CategoricalDistribution((64, 128))
    assert dists["train.seed"] == IntDistribution(0, 9, step=3)
    assert dists["model.scale_emb"] == IntDistribution(1, 24)
    assert s.fixed == ["quant=none"]
    values = {
        "optim.lr": 0.01,
        "model.hidden_size": 128,
        "train.seed": 3,
        "model.scale_emb": 5,
        "model.scale_depth": 1.4,
    }
    assert s.overrides(values) == [
        "quant=none",
        "optim.lr=0.01",
        "model.hidden_size=128",
        "train.seed=3",
        "model.scale_emb=5",
        "model.scale_depth=1.4",
    ]


def test_a_grid_is_every_combination_in_order_and_needs_choices() -> None:
    s = space("optim.lr=1e-2,2e-2", "model.hidden_size=64,128")
    assert s.grid() == [
        {"optim.lr": 1e-2, "model.hidden_size": 64},
        {"optim.lr": 1e-2, "model.hidden_size": 128},
        {"optim.lr": 2e-2, "model.hidden_size": 64},
        {"optim.lr": 2e-2, "model.hidden_size": 128},
    ]
    with pytest.raises(ConfigError, match="optim.lr is a range"):
        space("optim.lr=interval(1e-3,1e-1)").grid()


def test_the_command_lines_value_of_a_key_replaces_the_study_files() -> None:
    s = space("optim.lr=1e-3,1e-2,1e-1", "model.hidden_size=64,128", "optim.lr=5e-3,1e-2")
    assert [d.key for d in s.dimensions] == ["optim.lr", "model.hidden_size"]
    assert s.dimensions[0].choices == (5e-3, 1e-2)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=interval(1e-1,1e-3)", "optim.lr=interval"),
        ("optim.lr=tag(log,interval(0,1))", "optim.lr=interval"),
        ("train.seed=range(5,1)", "train.seed=range"),
    ],
)
def test_an_empty_or_impossible_range_names_its_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        space(override)


def test_nothing_to_search_is_refused() -> None:
    with pytest.raises(ConfigError, match="hydra.sweeper.params: nothing to search"):
        space("quant=none")


# Every integer setting, generated from the settings' fields: a new one is covered without a new case.
INT_FIELDS = [f.name for f in dataclasses.fields(OptunaSettings) if f.name.startswith(("n_", "prune_"))]


@pytest.mark.parametrize("key", INT_FIELDS)
@pytest.mark.parametrize("value", [-1, 1.5, "x", True])
def test_every_integer_setting_is_checked_by_name(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"hydra.sweeper.{key}="):
        check_settings(dataclasses.replace(OptunaSettings(n_trials=4), **{key: value}))


@pytest.mark.parametrize(("key", "value"), [("sampler", "cmaes"), ("objective", "loss"), ("n_trials", None)])
def test_every_choice_setting_is_checked_by_name(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"hydra.sweeper.{key}"):
        check_settings(dataclasses.replace(OptunaSettings(n_trials=4), **{key: value}))


BASE = ["-m", "hydra/sweeper=optuna", "quant=none", "tracking=none"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hydra.sweeper.n_trials=2", "optim.lrr=interval(1e-3,1e-1)"], "optim.lrr"),
        (["hydra.sweeper.sampler=grid", "optim.lr=interval(1e-3,1e-1)"], "optim.lr is a range"),
        (["optim.lr=interval(1e-3,1e-1)"], "hydra.sweeper.n_trials: required with sampler=tpe"),
        (["hydra.sweeper.sampler=cmaes", "hydra.sweeper.n_trials=2", "optim.lr=1e-2,2e-2"], "hydra.sweeper.sampler"),
        (["hydra.sweeper.sampler=grid", "model.num_kv_heads=2,3"], "model.num_kv_heads"),
        (["hydra.sweeper.sampler=grid", "optim.lr=1e-2,-1"], "optim.lr"),
        (["hydra.sweeper.sampler=grid", "optim.lr=1e-2,2e-2", "model.parameterization=xp"], "model.parameterization"),
    ],
)
def test_bad_study_stops_in_one_line_before_any_trial(
    tmp_path: Path, monkeypatch, capsys, args: list[str], message: str
) -> None:
    from bitcpm.frontend.app import run

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = run([*BASE, *args, f"train.output_root={out}", f"hydra.sweeper.storage=sqlite:///{tmp_path}/o.db"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists() and not (tmp_path / "o.db").exists()


def test_a_study_name_reused_for_another_space_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    from bitcpm.frontend.app import run

    monkeypatch.chdir(tmp_path)
    common = [*BASE, "hydra.sweeper.sampler=grid", "hydra.sweeper.study_name=s"]
    common += [f"train.output_root={tmp_path}/out", f"hydra.sweeper.storage=sqlite:///{tmp_path}/o.db"]
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path}/o.db")
    study.set_user_attr("bitcpm.space", '{"space": "something else"}')
    assert run([*common, "optim.lr=1e-2,2e-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hydra.sweeper.study_name=s" in err[0] and "another study_name" in err[0]
    assert not (tmp_path / "out").exists()


def test_windtunnel_search_says_where_it_went(capsys) -> None:
    from bitcpm.windtunnel.cli import main

    assert main(["search", "s", "--param", "optim.lr=1e-2,2e-2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hydra/sweeper=optuna" in err[0]
