"""`python -m launchers.ascend_check`: the NPU software stack of this node, checked before any rank starts.

Reads package metadata and CANN's install info instead of importing torch_npu (whose import already fails
when CANN is missing, with a message about a shared library rather than the version that is wrong).
Exit 0 when the stack looks usable, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from importlib import metadata, util
from pathlib import Path

CANN_ROOTS = ("/usr/local/Ascend/ascend-toolkit/latest", "/usr/local/Ascend/cann")


def installed_version(dist: str) -> str | None:
    """Version of an installed distribution, without importing it."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    # '2.1.0.post3' -> (2, 1, 0); '2.13.0+cpu' -> (2, 13, 0)
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def cann_version(environ: Mapping[str, str]) -> tuple[str | None, Path | None]:
    """CANN toolkit version from <root>/<arch>-linux/ascend_toolkit_install.info (version=...)."""
    roots = [environ.get("ASCEND_TOOLKIT_HOME"), environ.get("ASCEND_HOME_PATH"), *CANN_ROOTS]
    for root in filter(None, roots):
        for info in sorted(Path(root).glob("*-linux/ascend_toolkit_install.info")):
            match = re.search(r"^version=(.+)$", info.read_text(errors="replace"), flags=re.M)
            if match:
                return match.group(1).strip(), info
    return None, None


def megatron_version() -> tuple[str | None, str]:
    """megatron-core's version: the installed distribution, or a source tree on the path (MindSpeed-LLM's copy)."""
    version = installed_version("megatron-core")
    if version:
        return version, "installed"
    spec = util.find_spec("megatron")
    if spec is None or not spec.submodule_search_locations:
        return None, ""
    info = Path(next(iter(spec.submodule_search_locations))) / "core" / "package_info.py"
    if not info.exists():
        return None, ""
    parts = dict(re.findall(r"^(MAJOR|MINOR|PATCH)\s*=\s*(\d+)", info.read_text(), flags=re.M))
    return ".".join(parts.get(k, "?") for k in ("MAJOR", "MINOR", "PATCH")), f"source tree {info.parent.parent}"


def check_stack(
    environ: Mapping[str, str] = os.environ, version: Callable[[str], str | None] = installed_version
) -> tuple[list[str], list[str]]:
    """(report lines, problems) for torch, torch_npu, CANN, MindSpeed and megatron-core."""
    lines, problems = [], []
    torch, npu = version("torch"), version("torch_npu") or version("torch-npu")
    lines.append(f"  torch          {torch or 'missing'}")
    if torch is None:
        problems.append("torch is not installed")
    if npu is None:
        problems.append("torch_npu is not installed: pip install the torch_npu build that matches torch and CANN")
    elif torch and _release(npu) != _release(torch):
        problems.append(f"torch_npu {npu} is built for torch {'.'.join(map(str, _release(npu)))}, not torch {torch}")
    lines.append(f"  torch_npu      {npu or 'missing'}")
    cann, info = cann_version(environ)
    lines.append(f"  CANN           {cann or 'missing'}{f'  ({info})' if info else ''}")
    if cann is None:
        problems.append("CANN toolkit not found: source its set_env.sh (launcher.cann.set_env) or install it")
    mindspeed = version("mindspeed")
    lines.append(f"  MindSpeed      {mindspeed or 'missing'}")
    if mindspeed is None:
        problems.append("MindSpeed is not installed: pip install -e a clone of the Ascend MindSpeed repository")
    elif mindspeed.startswith("0.0.1"):
        problems.append(f"mindspeed {mindspeed} is PyPI's non-functional placeholder; install MindSpeed from source")
    megatron, where = megatron_version()
    lines.append(f"  megatron-core  {megatron or 'missing'}{f'  ({where})' if where else ''}")
    if megatron is None:
        problems.append("megatron-core not found (pip install megatron-core, or the tree MindSpeed pins)")
    return lines, problems


def main() -> int:
    """Print the stack; exit 1 with the problems found."""
    lines, problems = check_stack()
    print(f"bitcpm: NPU software stack on {socket.gethostname()}:", *lines, sep="\n", flush=True)
    if problems:
        print("bitcpm: the NPU stack is not usable:", *(f"  - {p}" for p in problems), sep="\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
