"""A launcher plugged in from outside the package, the way a new user's package adds one.

The toy launcher runs trials as threads of this process (recording what it is handed instead of training). It is
one registry call plus a preset in a --config-dir (launcher/threads.yaml) plus its schema; the front end then
validates, plans and dispatches its jobs by the capabilities it declares. The last tests read the package: a
new launcher needs its module, its preset/schema and one registry line, because nothing else names a launcher.
"""

from __future__ import annotations

import ast
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

import bitcpm.config.launcher as launcher_registry
from bitcpm import train
from bitcpm.config.launcher import LauncherConfig, register_launcher
from bitcpm.config.load import job_to_yaml, load_job
from bitcpm.config.specs import AT_LEAST_1, Spec
from bitcpm.frontend.compose import CommandLine, compose_job
from launchers import local
from launchers.capabilities import Capabilities
from launchers.request import LaunchRequest

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]
REGISTRY_FILE = REPO / "bitcpm" / "config" / "launcher.py"


@dataclass
class ThreadsLauncherConfig(LauncherConfig):
    """The toy launcher's keys: the common ones plus the size of its thread pool."""

    name: str = "threads"
    """threads."""
    pool: int = 2
    """Threads that run trials at once."""

    @classmethod
    def value_specs(cls) -> dict[str, Spec]:
        """The common keys' values plus the pool's."""
        return {**super().value_specs(), "pool": AT_LEAST_1}

    def request_fields(self, job: Any, run_dir: Path) -> dict[str, Any]:
        """Its share of the request: the pool size, as an environment variable of the trial."""
        return {"env": {"TOY_POOL": str(self.pool)}}


class ThreadsLauncher:
    """Runs each trial in a thread of this process; records the requests instead of starting a worker."""

    def __init__(self, capabilities: Capabilities) -> None:
        self.CAPABILITIES = capabilities
        self.calls: list[tuple[str, list[LaunchRequest]]] = []
        self.threads: set[str] = set()
        self.trial_slots = local.trial_slots  # its slots are the local launcher's: cores or GPUs per trial
        self.trial_log = local.trial_log

    def describe(self, req: LaunchRequest) -> str:
        """The plan's line."""
        return f"a thread runs {req.worker_module} {req.worker_args[0]}"

    def launch(self, req: LaunchRequest) -> int:
        """One request."""
        self.calls.append(("launch", [req]))
        return 0

    def launch_many(self, requests: list[LaunchRequest]) -> int:
        """A multirun as one batch."""
        self.calls.append(("launch_many", list(requests)))
        return 0

    def launch_chain(self, requests: list[LaunchRequest]) -> int:
        """A pipeline's stages at once."""
        self.calls.append(("launch_chain", list(requests)))
        return 0

    def run_trials(
        self, trials: list[list[LaunchRequest]], slots: Any, on_start=None, on_end=None, *_: Any, **__: Any
    ) -> list:
        """Every trial in a thread of its own; returns each one's exit code."""
        codes = [0] * len(trials)
        lock = threading.Lock()

        def one(k: int) -> None:
            with lock:
                self.threads.add(threading.current_thread().name)
                self.calls.append(("run_trials", list(trials[k])))
                if on_start is not None:
                    on_start(k, slots.envs[k % slots.parallel])
                if on_end is not None:
                    on_end(k, codes[k])

        workers = [threading.Thread(target=one, args=(k,), name=f"toy-trial-{k}") for k in range(len(trials))]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        return codes


@pytest.fixture
def plug_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Register the toy launcher (its preset in a --config-dir); the registry is restored afterwards."""
    monkeypatch.setattr(launcher_registry, "_REGISTRY", dict(launcher_registry._REGISTRY))
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf"
    (conf / "launcher").mkdir(parents=True)
    (conf / "launcher" / "threads.yaml").write_text("defaults:\n  - schema@_here_: threads\n  - _self_\npool: 3\n")

    def plug(capabilities: Capabilities) -> tuple[ThreadsLauncher, list[str]]:
        toy = ThreadsLauncher(capabilities)
        register_launcher("threads", toy, ThreadsLauncherConfig)  # the one registry call
        return toy, ["--config-dir", str(conf), "launcher=threads", "train.output_root=out"]

    return plug


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        (Capabilities(parallel_trials=True), ["run_trials", "run_trials"]),
        (Capabilities(arrays=True), ["launch_many"]),
        (Capabilities(), ["launch", "launch"]),
    ],
    ids=["parallel_trials", "arrays", "nothing"],
)
def test_a_multirun_goes_where_the_capabilities_say(plug_in, capabilities, expected, capsys) -> None:
    toy, args = plug_in(capabilities)
    argv = ["-m", *args, "experiment=smoke", "optim.lr=1e-2,5e-3"]
    assert train.main(argv) == 0
    assert [kind for kind, _ in toy.calls] == expected
    requests = [req for _, reqs in toy.calls for req in reqs]
    assert len({r.run_dir for r in requests}) == 2 and all((r.run_dir / "config.yaml").is_file() for r in requests)
    assert all(r.env == {"TOY_POOL": "3"} for r in requests)  # its preset's value, through its schema's hook
    assert all(not r.run_dir.is_absolute() for r in requests)  # not `remote`: paths as given
    if capabilities.parallel_trials:
        assert toy.threads == {"toy-trial-0", "toy-trial-1"}
    out = capsys.readouterr().out
    assert out.count("launch     threads:") == 2 and "a thread runs bitcpm.worker" in out
    saved = load_job(requests[0].run_dir / "config.yaml")  # the worker's view of a saved run
    assert isinstance(saved.launcher, ThreadsLauncherConfig) and saved.launcher.pool == 3


def test_a_pipeline_goes_to_launch_chain(plug_in) -> None:
    toy, args = plug_in(Capabilities(chains=True, waits=False))
    assert train.main([*args, "experiment=debug_pipeline", "tracking=none"]) == 0
    assert [kind for kind, _ in toy.calls] == ["launch_chain"]
    stages = toy.calls[0][1]
    assert len(stages) == 3 and all((r.run_dir / "config.yaml").is_file() for r in stages)
    assert [load_job(r.run_dir / "config.yaml").stage.name for r in stages] == ["pretrain", "qat", "distill"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["launcher.pool=0"], "launcher.pool=0: expected a value >= 1"),  # its schema's value specs
        (["launcher.nodes=2", "parallel.micro_batch_size=1"], "launcher=threads runs on this machine"),  # no multi_node
        (["launcher.name=pbs"], "launcher.name=pbs: expected one of local, slurm, ascend, threads"),
    ],
)
def test_its_keys_are_checked(plug_in, overrides: list[str], message: str, capsys) -> None:
    _, args = plug_in(Capabilities(parallel_trials=True))
    assert train.main([*args, *overrides, "dry_run=true"]) == 2
    assert message in capsys.readouterr().err


def test_a_saved_run_of_a_launcher_this_process_lacks_loads_its_common_keys(tmp_path: Path) -> None:
    # The worker of a package's launcher (registered in the front end only) and runs saved before launcher
    # schemas (one flat section with every launcher's keys) both load.
    saved = OmegaConf.create(job_to_yaml(compose_job(CommandLine(), ["tracking=none"], check_rules=False)))
    config = tmp_path / "config.yaml"
    saved.launcher = {"name": "elsewhere", "nodes": 1, "pool": 4, "partition": "gpu"}
    config.write_text(OmegaConf.to_yaml(saved))
    job = load_job(config)
    assert type(job.launcher) is LauncherConfig and job.launcher.name == "elsewhere"
    saved.launcher = {"name": "local", "partition": None, "scheduler": "slurm", "max_parallel": 2}
    config.write_text(OmegaConf.to_yaml(saved))
    job = load_job(config)
    assert type(job.launcher).__name__ == "LocalLauncherConfig" and job.launcher.max_parallel == 2


# --- reading the package: only the registry and the launchers' own modules name a launcher ------------------


def _python_files(*roots: str) -> list[Path]:
    return [p for root in roots for p in sorted((REPO / root).rglob("*.py"))]


def test_no_launcher_name_outside_the_registry() -> None:
    names = set(LauncherConfig.schemas())
    assert {"local", "slurm", "ascend"} <= names
    offenders = []
    for path in _python_files("bitcpm", "hydra_plugins"):
        if path == REGISTRY_FILE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert offenders == [], "launchers are chosen by capability; their names live in bitcpm/config/launcher.py"


def test_the_package_reaches_launcher_modules_only_through_the_registry() -> None:
    generic = {"launchers", "launchers.capabilities", "launchers.request"}
    offenders = []
    for path in _python_files("bitcpm", "hydra_plugins"):
        if path == REGISTRY_FILE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            offenders += [
                f"{path.relative_to(REPO)}: {m}" for m in modules if m.startswith("launchers") and m not in generic
            ]
    assert offenders == []


def test_one_registry_line_per_launcher() -> None:
    tree = ast.parse(REGISTRY_FILE.read_text())
    calls = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", "") == "register_launcher"
    ]
    registered = [call.args[0].value for call in calls]
    assert registered == ["local", "slurm", "ascend"]
    assert all(call.lineno == call.end_lineno for call in calls)  # one line each
    for name in registered:  # and each one's preset names its schema
        assert f"schema@_here_: {name}" in (REPO / "conf" / "launcher" / f"{name}.yaml").read_text()
