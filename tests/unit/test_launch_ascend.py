"""launcher=ascend without hardware: per-node scripts, rank table, CANN environment, version check, plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitcpm.config.validate import ConfigError
from bitcpm.frontend.compose import CommandLine, compose_job
from bitcpm.frontend.submission import request_for
from launchers import ascend, node_scripts
from launchers.ascend_check import check_stack
from launchers.ranktable import RankTableError, rank_table

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]
NPU = ["launcher=ascend", "hardware=npu", "parallel.tp=2", "parallel.micro_batch_size=1"]
HOSTS = ["10.0.0.1", "10.0.0.2"]


def _job(*extra: str):
    return compose_job(CommandLine(), [*NPU, "launcher.nodes=2", "parallel.global_batch_size=64", *extra])


def test_scripts_per_node_start_torchrun_with_node_rank(tmp_path: Path):
    job = _job(
        "launcher.scheduler=none", f"launcher.hosts=[{','.join(HOSTS)}]", "launcher.cann.hccl_socket_ifname=eth0"
    )
    req = request_for(job, tmp_path / "run", "bitcpm.worker")
    paths = node_scripts.write_node_scripts(req)
    assert [p.name for p in paths] == ["node0.sh", "node1.sh"]
    for node, path in enumerate(paths):
        text = path.read_text()
        assert f"--node-rank={node}" in text and "--nnodes=2" in text and "--nproc-per-node=8" in text
        assert "--master-addr=10.0.0.1" in text and "--master-port=29500" in text
        assert "source /usr/local/Ascend/ascend-toolkit/set_env.sh" in text
        assert "export HCCL_CONNECT_TIMEOUT=1800" in text and "export HCCL_SOCKET_IFNAME=eth0" in text
        assert "export PYTORCH_NPU_ALLOC_CONF=expandable_segments:True" in text
        assert "-m launchers.ascend_check" in text.split("torch.distributed.run")[0]  # checked before the ranks
        assert f"-m bitcpm.worker {tmp_path / 'run' / 'config.yaml'}" in text
    assert subprocess.run(["bash", "-n", str(paths[1])]).returncode == 0


def test_scripts_without_hosts_take_master_from_the_environment(tmp_path: Path):
    req = request_for(_job("launcher.scheduler=none"), tmp_path, "bitcpm.worker")
    text = node_scripts.node_script(req, 1)
    assert "${MASTER_ADDR:?" in text


def _ips(node: int) -> list[str]:
    return [f"192.168.{node}.{d}" for d in range(8)]


def test_rank_table_v1_numbers_ranks_across_servers():
    table = rank_table(HOSTS, [_ips(0), _ips(1)], list(range(8)))
    assert table["version"] == "1.0" and table["server_count"] == "2" and table["status"] == "completed"
    second = table["server_list"][1]
    assert second["server_id"] == "10.0.0.2"
    assert second["device"][3] == {"device_id": "3", "device_ip": "192.168.1.3", "rank_id": "11"}
    with pytest.raises(RankTableError, match="hccn_tool"):
        rank_table(HOSTS, [_ips(0)], list(range(8)))


def test_rank_table_file_is_exported(tmp_path: Path):
    ips = f"launcher.device_ips=[[{','.join(_ips(0))}],[{','.join(_ips(1))}]]"
    job = _job("launcher.scheduler=none", f"launcher.hosts=[{','.join(HOSTS)}]", "launcher.rank_table=true", ips)
    req = request_for(job, tmp_path, "bitcpm.worker")
    node_scripts.write_node_scripts(req)
    table = json.loads((tmp_path / "launch" / "rank_table.json").read_text())
    assert [s["server_id"] for s in table["server_list"]] == HOSTS
    assert f"RANK_TABLE_FILE={tmp_path / 'launch' / 'rank_table.json'}" in (tmp_path / "launch/node0.sh").read_text()


def test_rank_table_needs_device_ips():
    with pytest.raises(ConfigError, match=r"launcher.device_ips\[0\]"):
        _job("launcher.scheduler=none", f"launcher.hosts=[{','.join(HOSTS)}]", "launcher.rank_table=true")


def test_slurm_path_asks_for_npu_gres_and_sources_cann(tmp_path: Path):
    req = request_for(
        _job("launcher.partition=ascend", "launcher.cann.visible_devices='0,1,2,3,4,5,6,7'"), tmp_path, "w"
    )
    assert req.slurm is not None and req.slurm.gres == "npu:8" and req.slurm.gpus_per_node is None
    assert req.setup[0] == "source /usr/local/Ascend/ascend-toolkit/set_env.sh"
    assert req.env["ASCEND_RT_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7" and req.env["TASK_QUEUE_ENABLE"] == "2"
    assert req.preflight == ["launchers.ascend_check"]
    assert "#SBATCH --gres=npu:8" in ascend.describe(req)


def test_ascend_rules():
    with pytest.raises(ConfigError, match="launcher=ascend"):
        compose_job(CommandLine(), ["launcher=slurm", "hardware=npu", "parallel.micro_batch_size=1"])
    with pytest.raises(ConfigError, match="launcher.hosts lists 1"):
        _job("launcher.scheduler=none", "launcher.hosts=[a]")


def _fake_cann(root: Path, version: str) -> dict[str, str]:
    info = root / "x86_64-linux" / "ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text(f"package_name=Ascend-cann-toolkit\nversion={version}\narch=x86_64\n")
    return {"ASCEND_TOOLKIT_HOME": str(root)}


def test_version_check_accepts_a_matching_stack(tmp_path: Path):
    versions = {"torch": "2.1.0", "torch_npu": "2.1.0.post3", "mindspeed": "0.8.0", "megatron-core": "0.12.1"}
    lines, problems = check_stack(_fake_cann(tmp_path, "8.0.RC2"), versions.get)
    assert problems == []
    assert any("8.0.RC2" in line for line in lines) and any("2.1.0.post3" in line for line in lines)


def test_version_check_names_each_problem(tmp_path: Path):
    versions = {"torch": "2.13.0+cpu", "torch_npu": "2.14.0", "mindspeed": "0.0.1.dev1"}
    _, problems = check_stack({"ASCEND_TOOLKIT_HOME": str(tmp_path / "none")}, versions.get)
    text = "\n".join(problems)
    assert "torch_npu 2.14.0 is built for torch 2.14.0, not torch 2.13.0+cpu" in text
    assert "CANN toolkit not found" in text and "placeholder" in text


def test_version_check_command_fails_clearly_here():
    # This machine has no CANN and no torch_npu: the check must say so and exit 1, not crash.
    out = subprocess.run([sys.executable, "-m", "launchers.ascend_check"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1
    assert "torch_npu is not installed" in out.stderr and "NPU software stack" in out.stdout


def test_plan_prints_per_node_commands_for_two_npu_nodes():
    args = [*NPU, "model=8b", "launcher.nodes=2", "parallel.global_batch_size=64", "launcher.scheduler=none"]
    out = subprocess.run(
        [sys.executable, "-m", "bitcpm.train", *args, "train.seq_length=4096", "dry_run=true"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "--node-rank=0" in text and "--node-rank=1" in text and "--nproc-per-node=8" in text
    assert "node 1: ranks 8-15" in text
    assert "WARNING" in text and "exceeds hardware.memory_gb=64" in text  # 8B at tp=2 does not fit a 910B
    assert "step time" in text and "40% MFU of 313 TFLOP/s" in text
    assert not (REPO / "outputs").exists() or not list((REPO / "outputs").glob("8b-*/launch/node0.sh"))


def test_non_npu_hardware_gets_plain_scripts_and_a_warning(tmp_path: Path):
    job = compose_job(CommandLine(), ["launcher=ascend", "launcher.scheduler=none"])
    req = request_for(job, tmp_path, "bitcpm.worker")
    assert req.env == {} and req.setup == [] and req.preflight == []
    from bitcpm.frontend.submission import plan_text

    assert "WARNING    launcher=ascend with hardware.device=cpu" in plan_text(job)
