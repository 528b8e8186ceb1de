"""Checkpoint manifests: every file's size and sha256, written before COMPLETE and checked before a load (no torch).

A COMPLETE marker says a save finished; it says nothing about what happened to the files afterwards (a partial
copy, a bad disk). Rank 0 writes MANIFEST.json into the staging directory once every shard is on disk, so the
marker stays the last thing written; a load compares the files with it. Files the manifest does not list (the
marker itself, a user's notes) are ignored: only what the save wrote has to be whole. Checkpoints written before
manifests existed load with a one-time note instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "MANIFEST.json"
# sha256 runs on the SHA extensions of current x86 and ARMv8 CPUs: faster than blake2b there (BENCHMARKS.md).
ALGORITHM = "sha256"
_FORMAT = 1
_CHUNK = 4 << 20
_UNLISTED = frozenset({MANIFEST, "COMPLETE"})  # COMPLETE comes after the manifest, by design


class DamagedCheckpointError(ValueError):
    """A complete checkpoint whose files differ from its manifest (the message is one line)."""


@dataclass(frozen=True)
class Verdict:
    """What a checkpoint's files say about it: intact, damaged (first bad file and why) or unverifiable."""

    checkpoint: Path
    state: str  # "intact" | "damaged" | "unverifiable"
    file: str | None = None
    reason: str | None = None
    files: int = 0
    size: int = 0

    @property
    def usable(self) -> bool:
        """Loadable: intact, or written before manifests (loaded unverified, with a note)."""
        return self.state != "damaged"

    def problem(self) -> str:
        """'FILE: REASON' of a damaged checkpoint."""
        return f"{self.file}: {self.reason}"

    def error(self, what: str) -> DamagedCheckpointError:
        """The one-line error a load of this damaged checkpoint stops with; `what` names where it came from."""
        return DamagedCheckpointError(f"{what}: checkpoint {self.checkpoint} is damaged: {self.problem()}")


def _listed_files(ckpt_dir: Path) -> list[str]:
    """Relative paths (posix) of the regular files under ckpt_dir that a manifest lists, sorted."""
    out = []
    for dirpath, _dirs, names in os.walk(ckpt_dir):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(ckpt_dir).as_posix()
            if rel not in _UNLISTED:
                out.append(rel)
    return sorted(out)


def file_digest(path: Path, algorithm: str = ALGORITHM) -> str:
    """Hex digest of one file, read in chunks into one reused buffer."""
    digest = hashlib.new(algorithm)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _digests(root: Path, names: list[str], algorithm: str, workers: int | None) -> list[str | OSError]:
    """Digest of each file, or the OSError reading it raised (a verdict, not an exception, for the caller)."""

    def one(name: str) -> str | OSError:
        try:
            return file_digest(root / name, algorithm)
        except OSError as exc:
            return exc

    # hashlib releases the GIL on large updates: threads hash several shard files at once.
    threads = max(1, min(len(names), workers or min(8, os.cpu_count() or 1)))
    if threads == 1:
        return [one(n) for n in names]
    with ThreadPoolExecutor(threads, thread_name_prefix="manifest") as pool:
        return list(pool.map(one, names))


def write_manifest(ckpt_dir: Path, workers: int | None = None) -> Path:
    """Record every file's size and hash in ckpt_dir/MANIFEST.json and flush it (rank 0, before COMPLETE)."""
    names = _listed_files(ckpt_dir)
    sizes = [(ckpt_dir / n).stat().st_size for n in names]
    hashes = _digests(ckpt_dir, names, ALGORITHM, workers)
    errors = [h for h in hashes if isinstance(h, OSError)]
    if errors:
        raise errors[0]  # the save fails as any failed write does: no marker, the previous checkpoint stays
    files = {n: {"size": s, ALGORITHM: h} for n, s, h in zip(names, sizes, hashes, strict=True)}
    path = ckpt_dir / MANIFEST
    with open(path, "w") as f:
        json.dump({"format": _FORMAT, "algorithm": ALGORITHM, "files": files}, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    # The manifest's directory entry must be on disk before the marker that vouches for it.
    fd = os.open(ckpt_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _read_manifest(ckpt_dir: Path) -> tuple[str, dict[str, dict]]:
    """(algorithm, {file: entry}); ValueError naming what is wrong with an unreadable manifest."""
    try:
        record = json.loads((ckpt_dir / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__})") from None
    files = record.get("files") if isinstance(record, dict) else None
    algorithm = record.get("algorithm") if isinstance(record, dict) else None
    if not isinstance(files, dict) or algorithm not in hashlib.algorithms_available:
        raise ValueError("unreadable (not a bitcpm manifest)")
    for entry in files.values():
        whole = isinstance(entry, dict) and isinstance(entry.get("size"), int)
        if not (whole and isinstance(entry.get(algorithm), str)):
            raise ValueError("unreadable (an entry without size or hash)")
    return algorithm, files


def verify(ckpt_dir: Path, workers: int | None = None) -> Verdict:
    """Compare a checkpoint's files with its manifest: missing and size first (cheap), then the hashes."""
    if not (ckpt_dir / MANIFEST).is_file():
        return Verdict(ckpt_dir, "unverifiable")
    try:
        algorithm, files = _read_manifest(ckpt_dir)
    except ValueError as exc:
        return Verdict(ckpt_dir, "damaged", MANIFEST, str(exc))
    names = sorted(files)
    for name in names:
        try:
            size = (ckpt_dir / name).stat().st_size
        except FileNotFoundError:
            return Verdict(ckpt_dir, "damaged", name, "missing")
        except OSError as exc:
            return Verdict(ckpt_dir, "damaged", name, f"unreadable ({exc.strerror or type(exc).__name__})")
        expected = files[name]["size"]
        if size != expected:
            return Verdict(ckpt_dir, "damaged", name, f"size differs ({size} bytes, the manifest says {expected})")
    for name, digest in zip(names, _digests(ckpt_dir, names, algorithm, workers), strict=True):
        if isinstance(digest, OSError):
            return Verdict(ckpt_dir, "damaged", name, f"unreadable ({digest.strerror or type(digest).__name__})")
        if digest != files[name][algorithm]:
            return Verdict(ckpt_dir, "damaged", name, f"hash differs ({algorithm}; same size, other content)")
    return Verdict(ckpt_dir, "intact", files=len(names), size=sum(e["size"] for e in files.values()))


_noted: set[Path] = set()


def note_unverifiable(ckpt_dir: Path, say: Callable[[str], object] = print) -> None:
    """Say once per process that a checkpoint has no manifest, so its files cannot be checked."""
    key = ckpt_dir.resolve()
    if key in _noted:
        return
    _noted.add(key)
    say(f"bitcpm: note: checkpoint {ckpt_dir} has no {MANIFEST} (written before bitcpm recorded one): not verified")


def accept(verdict: Verdict, what: str, say: Callable[[str], object] = print) -> Verdict:
    """Every load's policy: DamagedCheckpointError when damaged, a note (once) when unverifiable, else pass."""
    if verdict.state == "damaged":
        raise verdict.error(what)
    if verdict.state == "unverifiable":
        note_unverifiable(verdict.checkpoint, say)
    return verdict


def require_usable(ckpt_dir: Path, what: str, say: Callable[[str], object] = print) -> Verdict:
    """Verify ckpt_dir and apply `accept` to the verdict."""
    return accept(verify(ckpt_dir), what, say)
