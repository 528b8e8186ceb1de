"""Studies are Hydra multiruns: every member is composed, validated and planned before the first starts."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.members import plan_members
from bitcpm.frontend.sweeps import study_names

pytestmark = pytest.mark.quick

SHIPPED = [
    "batch_size",
    "group_size",
    "init_scales",
    "lr_width",
    "lr_width_sp",
    "mup_search",
    "qat_fraction",
    "qat_lr",
    "qat_scratch",
]


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bitcpm.train", *args, f"train.output_root={cwd}/out"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def _members(name: str) -> list[list[str]]:
    """The study's batch as Hydra's BasicSweeper builds it: the cartesian product of its sweeper params."""
    import itertools

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bitcpm.config.store import register_schema
    from bitcpm.frontend.sweeps import register_sweeps
    from bitcpm.presets import conf_dir

    register_schema()
    register_sweeps()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        # The study's search space as Hydra composes it (a study may inherit it from another).
        sweeper = compose("train", overrides=[f"sweep={name}"], return_hydra_config=True).hydra.sweeper
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    if "optuna" in sweeper._target_:  # an Optuna study: each searched value's extremes, as its sweeper checks
        pytest.importorskip("optuna")  # the windtunnel extra (not in the lowest-versions job)
        from bitcpm.frontend.optuna_sweep import parse_space

        space = parse_space(parsed)
        return [[f"sweep={name}", *space.overrides(p)] for p in space.probe_points()]
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    return [[f"sweep={name}", *combo] for combo in itertools.product(*axes)]


@functools.cache
def _planned(name: str) -> list:
    """Every member of a shipped study, planned once per test process (several tests read the same studies)."""
    return plan_members(CommandLine(), _members(name))


def test_the_shipped_studies_are_the_issue_s_list() -> None:
    assert study_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_member_of_every_shipped_study_composes_and_validates(name: str) -> None:
    members = _planned(name)  # raises on the first bad member
    assert len(members) > 1
    dirs = {m.last_run_dir for m in members}
    assert len(dirs) == len(members), "every trial trains something different"
    for m in members:
        for stage in m.stages:  # a wind-tunnel trial stays short enough for a CPU (about a minute)
            job = stage.job
            assert job.train.steps * job.parallel.global_batch_size * job.train.seq_length <= 500_000


def test_lr_width_derives_the_shape_from_the_width() -> None:
    job = compose_job(CommandLine(), ["sweep=lr_width", "model.hidden_size=512"])
    assert (job.model.intermediate_size, job.model.num_attention_heads, job.quant.method) == (1536, 32, "none")
    assert (job.model.vocab_size, job.data.tokenizer, job.model.dim_model_base) == (512, "builtin512", 32)
    sp = compose_job(CommandLine(), ["sweep=lr_width_sp", "model.hidden_size=512"])
    assert (sp.model.parameterization, sp.model.intermediate_size) == ("sp", 1536)
    assert job.model.parameterization == "mup"


def test_qat_studies_share_one_full_precision_stable_run_per_seed() -> None:
    studies = {name: _planned(name) for name in ("group_size", "qat_lr", "qat_fraction")}
    stable = {name: {m.stages[0].run_dir for m in members} for name, members in studies.items()}
    assert len(stable["qat_lr"]) == 3 and stable["group_size"] == stable["qat_lr"] == stable["qat_fraction"]
    fp = studies["qat_lr"][0].stages[0].job
    assert (fp.quant.method, fp.optim.decay_fraction, fp.train.steps, fp.train.save_interval) == ("none", 0, 320, 80)
    assert [m.stages[1].job.stage.lr for m in studies["qat_lr"][::3]] == [5e-3, 1e-2, 1.5e-2]
    # g64 at QAT lr 5e-3 from 60% of the budget is one arm of all three studies: it trains once per seed.
    qat = [{m.stages[1].run_dir for m in members} for members in studies.values()]
    assert len(qat[0] & qat[1] & qat[2]) == 3


def test_qat_fraction_branches_off_the_stable_phase() -> None:
    members = _planned("qat_fraction")
    qat = [m.stages[1].job for m in members if m.job.study["seed"] == 1]
    assert [(j.stage.init_step, j.train.steps) for j in qat] == [(320, 80), (240, 160), (160, 240), (80, 320)]
    assert all(j.stage.init_from == str(members[0].stages[0].run_dir) for j in qat)
    assert {j.quant.label for j in qat} == {"ternary_g64"}


def test_recipe_members_plan_as_three_stage_pipelines(tmp_path: Path) -> None:
    proc = _train(["-m", "experiment=debug_pipeline", "optim.lr=1e-2,5e-3", "dry_run=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for member in (1, 2):
        for stage, name in enumerate(("pretrain", "qat", "distill"), 1):
            assert f"study member {member}/2, stage {stage}/3 '{name}'" in proc.stdout
    assert "2 member(s), 6 job(s) planned; dry run, nothing started" in proc.stdout
    assert not any((tmp_path / "out").glob("debug-*")), "a dry run writes no run directory"


def test_a_bad_third_member_stops_the_study_before_anything_starts(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    args = ["-m", "optim.lr=1e-2,5e-3,-1", "train.steps=20", f"tracking.uri=sqlite:///{db}"]
    proc = _train(args, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitcpm: error: study member 3/3 (optim.lr=-1): optim.lr=-1"), lines
    assert "started" not in proc.stdout
    assert not (tmp_path / "out").exists() and not db.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-m", "model=debug,nope", "dry_run=true"], "model=nope: no such option in conf/model/"),
        (["-m", "optim.lr=1e-2,5e-3", "optim.lrr=1", "dry_run=true"], "optim.lrr: unknown key"),
        (["-m", "parallel.tp=1,3", "dry_run=true"], "study member 2/2 (parallel.tp=3"),
        (["-m", "sweep=no_such_study"], "sweep=no_such_study: no such option"),
    ],
)
def test_study_errors_are_one_line_with_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = _train(args, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitcpm: error: ") and needle in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_hydra_sweeper_params_on_the_command_line(tmp_path: Path) -> None:
    proc = _train(["-m", '+hydra.sweeper.params={optim.lr: "1e-2,5e-3,2.5e-3"}', "dry_run=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 member(s), 3 job(s) planned" in proc.stdout
    # On top of a study's own search space: the product of both.
    both = _train(["-m", "sweep=qat_lr", '+hydra.sweeper.params={train.seed: "1,2"}', "dry_run=true"], tmp_path)
    assert both.returncode == 0, both.stderr
    assert "18 member(s), 36 job(s) planned" in both.stdout  # 3 lrs x 3 seeds x 2 train.seed


def test_hydra_flags_keep_their_meaning(tmp_path: Path) -> None:
    version = _train(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("Hydra ")
    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "tiny.yaml").write_text("defaults:\n  - debug\n  - _self_\nname: tiny\nnum_layers: 2\n")
    cfg = _train(["--config-dir", str(mine), "--cfg", "job", "--resolve", "model=tiny"], tmp_path)
    assert cfg.returncode == 0, cfg.stderr
    assert "name: tiny" in cfg.stdout and "num_layers: 2" in cfg.stdout
    study = _train(["-m", "--config-dir", str(mine), "model=tiny,debug", "dry_run=true"], tmp_path)
    assert study.returncode == 0, study.stderr
    assert "L=2 " in study.stdout and "L=4 " in study.stdout
    elsewhere = _train(
        ["--config-path", str(Path(__file__).parents[2] / "conf"), "model=8b", "quant=none", "dry_run=true"], tmp_path
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "8.19B parameters" in elsewhere.stdout


def test_the_study_lister_names_every_study() -> None:
    out = subprocess.run([sys.executable, "-m", "bitcpm.frontend.sweeps"], capture_output=True, text=True, check=True)
    for name in SHIPPED:
        assert name in out.stdout
    assert "python -m bitcpm.train -m sweep=NAME" in out.stdout
