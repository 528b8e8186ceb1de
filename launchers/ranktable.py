"""HCCL rank table (format v1.0): which NPU of which server holds which global rank.

With RANK_TABLE_FILE set, HCCL builds its communicators from the file instead of a TCP rendezvous, which keeps
set-up time flat on large clusters. HCCL does not fall back when the file is wrong (it fails at the first
collective), so the table is only written from complete information: every host with one device IP per rank.
"""

from __future__ import annotations

import json
from pathlib import Path


class RankTableError(ValueError):
    """The node list cannot make a valid rank table."""


def rank_table(hosts: list[str], device_ips: list[list[str]], device_ids: list[int]) -> dict:
    """The v1.0 table: servers in node-rank order, ranks numbered across servers in device order."""
    if not hosts:
        raise RankTableError("a rank table needs launcher.hosts (node addresses in node-rank order)")
    servers, rank = [], 0
    for node, host in enumerate(hosts):
        ips = device_ips[node] if node < len(device_ips) else []
        if len(ips) < len(device_ids):
            raise RankTableError(
                f"launcher.device_ips[{node}] ({host}) has {len(ips)} device IPs, need {len(device_ids)} "
                "(read them on the node with `hccn_tool -i <id> -ip -g` or from /etc/hccn.conf)"
            )
        devices = []
        for local, device in enumerate(device_ids):
            devices.append({"device_id": str(device), "device_ip": ips[local], "rank_id": str(rank)})
            rank += 1
        servers.append({"server_id": host, "device": devices, "host_nic_ip": "reserve"})
    return {"version": "1.0", "server_count": str(len(hosts)), "server_list": servers, "status": "completed"}


def write_rank_table(path: Path, table: dict) -> Path:
    """Write the table as JSON; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=2) + "\n")
    return path
