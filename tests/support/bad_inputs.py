"""Good and bad values of every kind of argument (bitcpm.config.arguments.Kind), for the generated bad-input tests.

Each kind has a good value (what a valid command line passes) and its classes of bad ones: missing, of the wrong
type (a file for a directory and the reverse), empty, damaged or truncated, and of the wrong kind (a full-precision
run where a ternary one is needed, a Hugging Face directory where a bitcpm run is needed and the reverse, a file
that is not a tokenizer). Runs are written from their files alone (tests/support/finished_run.py): the checks read
config.yaml, COMPLETE and MANIFEST.json, never the weights.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bitcpm.config.checkpoint_manifest import write_manifest
from bitcpm.data.tokenizer import BUILTIN_TOKENIZER_DIR
from tests.support.finished_run import finished_run

DOCS = [{"text": f"document {i}: the quick brown fox jumps over the lazy dog."} for i in range(4)]


@dataclass(frozen=True)
class Case:
    """One class of bad value of an argument: how to get it from the written Inputs, and what the error line may
    name besides the argument (the file itself when `named` is None, else e.g. the key)."""

    id: str
    value: Callable[[Inputs], object]
    named: str | None = None

    def resolve(self, inputs: Inputs) -> tuple[str, str]:
        """(the value as the command line passes it, what the error may name)."""
        value = str(self.value(inputs))
        return value, value if self.named is None else self.named


def write_megatron(prefix: Path, documents: list[list[int]]) -> str:
    """PREFIX.bin + PREFIX.idx in megatron-core's indexed-dataset format (uint16 tokens, one sequence per document),
    written by hand (bitcpm.data.megatron_index documents the header)."""
    from bitcpm.data.megatron_index import MAGIC

    tokens = b"".join(struct.pack(f"<{len(d)}H", *d) for d in documents)
    Path(f"{prefix}.bin").write_bytes(tokens)
    lengths = [len(d) for d in documents]
    pointers = [2 * sum(lengths[:i]) for i in range(len(lengths))]
    n = len(documents)
    index = MAGIC + struct.pack("<QBQQ", 1, 8, n, n + 1)
    index += (
        struct.pack(f"<{n}i", *lengths) + struct.pack(f"<{n}q", *pointers) + struct.pack(f"<{n + 1}q", *range(n + 1))
    )
    Path(f"{prefix}.idx").write_bytes(index)
    return str(prefix)


def _jsonl(docs: list[dict]) -> str:
    return "".join(json.dumps(d) + "\n" for d in docs)


def _safetensors(path: Path, header: dict) -> None:
    """A safetensors file holding only its header (enough for the header checks)."""
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def _checkpoint_file(run: Path) -> Path:
    """A weights file in the run's checkpoint, listed in its manifest."""
    ckpt = next((run / "checkpoints").iterdir())
    (ckpt / "__0_0.distcp").write_bytes(bytes(range(256)) * 4)
    write_manifest(ckpt, workers=1)
    return ckpt


class Inputs:
    """Every good and bad input, written once under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.missing = root / "no_such_path"
        self.file = root / "a_file.txt"
        self.file.write_text("not what was asked for\n")
        self.empty_dir = root / "empty_dir"
        self.empty_dir.mkdir()
        self._data()
        self._tokenizers()
        self._runs()
        self._hf()
        self._legacy()
        self._submitted()
        self._megatron()
        self.garbage_db = root / "garbage.db"
        self.garbage_db.write_text("not a database\n")

    def _data(self) -> None:
        d = self.root / "data"
        d.mkdir()
        self.jsonl = d / "good.jsonl"
        self.jsonl.write_text(_jsonl(DOCS))
        full = gzip.compress(_jsonl(DOCS * 50).encode())
        bad = {
            "empty": b"",
            "blank-lines": b"\n\n  \n",
            "binary": b"\x00\xff\xfe garbage \x80\x81",
            "truncated": _jsonl(DOCS).encode()[:-12],
            "not-json": b"title,text\nfirst,hello\n",
            "json-arrays": b'["a", "b"]\n["c"]\n',
            "truncated-gz": full[: len(full) // 2],
            "gz-name-plain-text": _jsonl(DOCS).encode(),
        }
        self.bad_jsonl = {}
        for name, data in bad.items():
            path = d / (f"{name}.jsonl.gz" if name.endswith("gz") or "gz-" in name else f"{name}.jsonl")
            path.write_bytes(data)
            self.bad_jsonl[name] = path
        self.bad_jsonl["directory"] = d / "a_directory.jsonl"
        self.bad_jsonl["directory"].mkdir()

    def _tokenizers(self) -> None:
        d = self.root / "tokenizers"
        real = (BUILTIN_TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8")
        self.bad_tokenizers = {"a-file": self.file, "empty-dir": self.empty_dir}
        for name, content in (
            ("garbage", "\x00 not json at all"),
            ("truncated", real[: len(real) // 2]),
            ("json-not-a-tokenizer", json.dumps({"model_type": "llama", "hidden_size": 64})),
        ):
            (d / name).mkdir(parents=True)
            (d / name / "tokenizer.json").write_text(content, encoding="utf-8")
            self.bad_tokenizers[name] = d / name

    def _runs(self) -> None:
        d = self.root / "runs"
        model = ["experiment=smoke"]
        self.ternary_run = finished_run(d / "ternary", [*model, "quant=ternary_g256"])
        _checkpoint_file(self.ternary_run)
        self.fp_run = finished_run(d / "full_precision", [*model, "quant=none"])
        self.damaged_run = finished_run(d / "damaged", [*model, "quant=ternary_g256"])
        (_checkpoint_file(self.damaged_run) / "__0_0.distcp").write_bytes(b"cut short")
        self.incomplete_run = finished_run(d / "incomplete", model)
        (next((self.incomplete_run / "checkpoints").iterdir()) / "COMPLETE").unlink()
        self.garbage_config_run = finished_run(d / "garbage_config", model)
        (self.garbage_config_run / "config.yaml").write_text("model: [unclosed\n  : {\n")
        self.truncated_config_run = finished_run(d / "truncated_config", model)
        config = (self.truncated_config_run / "config.yaml").read_text()
        (self.truncated_config_run / "config.yaml").write_text(config[: len(config) // 3])

    def _hf(self) -> None:
        d = self.root / "hf"
        config = json.dumps({"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4})
        self.hf = d / "good"
        self.hf.mkdir(parents=True)
        (self.hf / "config.json").write_text(config)
        _safetensors(self.hf / "model.safetensors", {"__metadata__": {"format": "pt"}})
        self.hf_garbage_config = d / "garbage_config"
        self.hf_garbage_config.mkdir()
        (self.hf_garbage_config / "config.json").write_text('{"model_type": "llama", "hidden')
        _safetensors(self.hf_garbage_config / "model.safetensors", {})
        self.hf_config_only = d / "config_only"
        self.hf_config_only.mkdir()
        (self.hf_config_only / "config.json").write_text(config)
        self.hf_truncated_weights = d / "truncated_weights"
        self.hf_truncated_weights.mkdir()
        (self.hf_truncated_weights / "config.json").write_text(config)
        (self.hf_truncated_weights / "model.safetensors").write_bytes(struct.pack("<Q", 4096) + b'{"emb')

    def _legacy(self) -> None:
        d = self.root / "legacy"

        def checkpoint(name: str, shard: bytes | None, config: bool = True) -> Path:
            run = d / name
            ckpt = run / "checkpoints" / "step_00000001"
            ckpt.mkdir(parents=True)
            (ckpt / "COMPLETE").write_text("1\n")
            if shard is not None:
                path = ckpt / "shard_tp00_pp00.pt"
                if shard == b"zip":
                    with zipfile.ZipFile(path, "w") as archive:
                        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
                else:
                    path.write_bytes(shard)
            else:
                (ckpt / "__0_0.distcp").write_bytes(b"\x01" * 64)  # the current format
            if config:
                (run / "config.yaml").write_text("model: {}\n")
            return ckpt

        self.legacy = checkpoint("good", b"zip")
        self.bad_legacy = {
            "current-format": checkpoint("current_format", None),
            "damaged-shard": checkpoint("damaged", b"PK\x03\x04 cut short"),
            "no-config-beside": checkpoint("no_config", b"zip", config=False),
        }

    def _submitted(self) -> None:
        d = self.root / "submitted"
        self.submitted = d / "good"
        (self.submitted / "launch").mkdir(parents=True)
        (self.submitted / "launch" / "jobs.json").write_text('{"jobs": []}\n')
        self.not_submitted = d / "local_run"
        self.not_submitted.mkdir()
        (self.not_submitted / "config.yaml").write_text("model: {}\n")
        self.garbage_jobs = d / "garbage"
        (self.garbage_jobs / "launch").mkdir(parents=True)
        (self.garbage_jobs / "launch" / "jobs.json").write_text('{"jobs": [{"job_id": ')

    def _megatron(self) -> None:
        d = self.root / "megatron"
        d.mkdir()
        self.megatron = write_megatron(d / "good", [[5, 6, 7], [8, 9], [10, 11, 12, 13]])
        self.bad_megatron = {"one-document": write_megatron(d / "one_document", [[5, 6, 7]])}
        for name, suffix, keep in (("truncated-bin", ".bin", 10), ("truncated-idx", ".idx", 40)):
            prefix = write_megatron(d / name, [[5, 6, 7], [8, 9], [10, 11, 12, 13]])
            path = Path(prefix + suffix)
            path.write_bytes(path.read_bytes()[:keep])
            self.bad_megatron[name] = prefix
        garbage = d / "garbage"
        Path(f"{garbage}.bin").write_bytes(b"\x00" * 8)
        Path(f"{garbage}.idx").write_bytes(b"not an index at all, just text\n")
        self.bad_megatron["garbage-idx"] = str(garbage)
        self.bad_megatron["a-directory"] = str(self.empty_dir)

    def good(self, kind, tmp: Path) -> str:
        """A value of this kind that passes its checks."""
        return str(
            {
                "run": self.ternary_run,
                "hf": self.hf,
                "run_or_hf": self.ternary_run,
                "output_file": tmp / "out" / "model.bin",
                "output_dir": tmp / "out",
                "directory": self.empty_dir,
                "jsonl": self.jsonl,
                "tokenizer": "builtin",
                "text": "x",
                "submitted_run": self.submitted,
                "legacy_checkpoint": self.legacy,
                "checkpoints": self.ternary_run,
                "megatron_prefix": self.megatron,
                "number": "64",
                "int_list": "64,128",
            }[kind.kind]
        )


def _paths(*pairs: tuple[str, Callable[[Inputs], object]]) -> list[Case]:
    return [Case(name, get) for name, get in pairs]


MISSING_OR_FILE = (("missing", lambda i: i.missing), ("a-file", lambda i: i.file))
EMPTY_DIR = ("empty-dir", lambda i: i.empty_dir)
JSONL_CASES = ("empty", "blank-lines", "binary", "truncated", "not-json", "json-arrays", "truncated-gz")
JSONL_CASES += ("gz-name-plain-text", "directory")
TOKENIZER_CASES = ("a-file", "empty-dir", "garbage", "truncated", "json-not-a-tokenizer")
LEGACY_CASES = ("current-format", "damaged-shard", "no-config-beside")
MEGATRON_CASES = ("one-document", "truncated-bin", "truncated-idx", "garbage-idx", "a-directory")


def _run(kind) -> list[Case]:
    cases = _paths(
        *MISSING_OR_FILE,
        EMPTY_DIR,
        ("hugging-face-dir", lambda i: i.hf),
        ("incomplete-checkpoint", lambda i: i.incomplete_run),
        ("garbage-config", lambda i: i.garbage_config_run),
        ("truncated-config", lambda i: i.truncated_config_run),
        ("damaged-checkpoint", lambda i: i.damaged_run),
    )
    if kind.option("ternary"):
        cases += _paths(("full-precision-run", lambda i: i.fp_run))
    return cases


def _hf(kind) -> list[Case]:
    cases = _paths(
        *MISSING_OR_FILE,
        EMPTY_DIR,
        ("bitcpm-run", lambda i: i.ternary_run),
        ("garbage-config", lambda i: i.hf_garbage_config),
    )
    if kind.option("weights", True):
        cases += _paths(
            ("no-weights", lambda i: i.hf_config_only), ("truncated-weights", lambda i: i.hf_truncated_weights)
        )
    return cases


def _number(kind) -> list[Case]:
    cases = [Case("wrong-type", lambda i: "abc")]
    interval = kind.option("range")
    if interval is not None:
        bad = interval.outside()
        value = str(int(bad)) if kind.option("type") is int else str(bad)
        cases.append(Case("out-of-range", lambda i: value))
    return cases


def _keyed(table: str, names: tuple[str, ...]) -> list[Case]:
    return [Case(name, lambda i, n=name: getattr(i, table)[n]) for name in names]


_CASES: dict[str, Callable[[object], list[Case]]] = {
    "run": _run,
    "hf": _hf,
    "run_or_hf": lambda k: _paths(
        *MISSING_OR_FILE,
        EMPTY_DIR,
        ("hf-garbage-config", lambda i: i.hf_garbage_config),
        ("hf-truncated-weights", lambda i: i.hf_truncated_weights),
        ("run-garbage-config", lambda i: i.garbage_config_run),
        ("run-incomplete-checkpoint", lambda i: i.incomplete_run),
        ("run-damaged-checkpoint", lambda i: i.damaged_run),
    ),
    "output_file": lambda k: _paths(("existing-dir", lambda i: i.empty_dir), ("under-a-file", lambda i: i.file / "x")),
    "output_dir": lambda k: _paths(("existing-file", lambda i: i.file), ("under-a-file", lambda i: i.file / "x")),
    "directory": lambda k: _paths(*MISSING_OR_FILE),
    "jsonl": lambda k: _paths(MISSING_OR_FILE[0]) + _keyed("bad_jsonl", JSONL_CASES),
    "tokenizer": lambda k: _paths(MISSING_OR_FILE[0]) + _keyed("bad_tokenizers", TOKENIZER_CASES),
    "number": _number,
    "choice": lambda k: [Case("no-such-choice", lambda i: "no_such_choice")],
    "text": lambda k: [Case("empty", lambda i: "")],
    "widths": lambda k: [Case("wrong-type", lambda i: "64,abc"), Case("too-few", lambda i: "64,128")],
    "int_list": lambda k: [
        Case("wrong-type", lambda i: "64,abc"),
        Case("empty", lambda i: ""),
        Case("zero", lambda i: "0"),
    ],
    "overrides": lambda k: [Case("unknown-key", lambda i: "no_such_key=1", "no_such_key")],
    "store_overrides": lambda k: [
        Case("unknown-key", lambda i: "no_such_key=1", "no_such_key"),
        Case("missing-store", lambda i: f"tracking.uri=sqlite:///{i.missing}.db", "tracking.uri"),
        Case("not-a-database", lambda i: f"tracking.uri=sqlite:///{i.garbage_db}", "tracking.uri"),
    ],
    "submitted_run": lambda k: _paths(
        *MISSING_OR_FILE,
        EMPTY_DIR,
        ("never-submitted", lambda i: i.not_submitted),
        ("garbage-jobs-json", lambda i: i.garbage_jobs),
    ),
    "legacy_checkpoint": lambda k: _paths(*MISSING_OR_FILE, EMPTY_DIR) + _keyed("bad_legacy", LEGACY_CASES),
    "checkpoints": lambda k: _paths(*MISSING_OR_FILE, EMPTY_DIR),
    "megatron_prefix": lambda k: _paths(MISSING_OR_FILE[0]) + _keyed("bad_megatron", MEGATRON_CASES),
}
KINDS = frozenset(_CASES)


def bad_values(kind) -> list[Case]:
    """Every class of bad value of a kind (KeyError for a kind without cases: the tests fail on it)."""
    return _CASES[kind.kind](kind)


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under roots with its size and modification time (what a case must leave as is)."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                stat = path.lstat()
                out[str(path)] = (stat.st_size if path.is_file() else -1, stat.st_mtime_ns)
    return out
