"""Check a run's checkpoints (or one checkpoint) against their manifests, without loading them.

    python -m bitcpm.training.verify RUN_DIR_OR_CHECKPOINT_DIR

One line per checkpoint, oldest first: intact, damaged (the first bad file and why), no manifest (written before
bitcpm recorded one: unverifiable, still loadable) or incomplete (no COMPLETE marker: never loaded). Exit 0 when
the newest complete checkpoint is intact (or unverifiable) and none is damaged, 1 when one is damaged or none is
complete, 2 on a bad argument. Needs no torch: it reads files only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bitcpm.config.arguments import InputError, Kind, OneLineParser
from bitcpm.config.checkpoint_manifest import ALGORITHM, Verdict, verify
from bitcpm.config.checkpoints import COMPLETE
from bitcpm.training.checkpoint_progress import human_bytes


def _step_of(path: Path) -> int | None:
    """The step of a checkpoint directory name (step_00000008, or .tmp_step_00000008 while staged)."""
    name = path.name.removeprefix(".tmp_")
    digits = name.removeprefix("step_")
    return int(digits) if name.startswith("step_") and digits.isdigit() else None


def checkpoints_at(path: Path) -> list[Path] | None:
    """The checkpoint directories a path names, oldest first; None when it is not a run or checkpoint directory."""
    if (path / COMPLETE).is_file() or _step_of(path) is not None:
        return [path]
    root = path if path.name == "checkpoints" else path / "checkpoints"
    if root.is_dir():
        found = [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None]
        return sorted(found, key=lambda p: (_step_of(p), p.name))
    if (path / "config.yaml").is_file():
        return []  # a run that has not saved yet
    return None


def describe(verdict: Verdict) -> str:
    """The report line of one complete checkpoint."""
    where = verdict.checkpoint
    if verdict.state == "intact":
        return f"{where}: intact ({verdict.files} files, {human_bytes(verdict.size)}, {ALGORITHM} checked)"
    if verdict.state == "damaged":
        return f"{where}: damaged: {verdict.problem()}"
    return f"{where}: no manifest (unverifiable: written before bitcpm recorded one)"


def _checkpoints_argument(value: str) -> tuple[Path, list[Path]]:
    path = Path(value)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    found = checkpoints_at(path) if path.is_dir() else None
    if found is None:
        raise InputError(
            f"{path}: not a bitcpm run or checkpoint directory (no checkpoints/, config.yaml or {COMPLETE} marker)"
        )
    return path, found


RUN_OR_CHECKPOINT = Kind("checkpoints", _checkpoints_argument)
"""A run directory, its checkpoints/ folder or one checkpoint directory."""


def parser() -> OneLineParser:
    """The command line: one path, checked as it is read."""
    p = OneLineParser(prog="python -m bitcpm.training.verify", description=__doc__.splitlines()[0])
    p.add_argument("path", type=RUN_OR_CHECKPOINT, metavar="RUN_DIR_OR_CHECKPOINT_DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI: report every checkpoint the argument names; the exit status says whether the newest can be loaded."""
    path, found = parser().parse_args(sys.argv[1:] if argv is None else argv).path
    verdicts = []
    for ckpt_dir in found:
        if not (ckpt_dir / COMPLETE).is_file():
            print(f"{ckpt_dir}: incomplete (no {COMPLETE} marker: an interrupted save, never loaded)")
            continue
        verdicts.append(verify(ckpt_dir))
        print(describe(verdicts[-1]), flush=True)
    if not verdicts:
        print(f"{path}: no complete checkpoint")
        return 1
    return 1 if any(v.state == "damaged" for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
