"""Tokenizers: train the built-in byte-level BPE and load HF / sentencepiece tokenizers uniformly.

Train the shipped tokenizer (deterministic)::

    python -m bitcpm.data.tokenizer train --vocab-size 8192 --output bitcpm/data/assets/tokenizer

Inspect any tokenizer spec::

    python -m bitcpm.data.tokenizer info builtin
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bitcpm.config.arguments import OUTPUT_DIR, InputError, Kind, OneLineParser, number, text
from bitcpm.config.ranges import Range
from bitcpm.data.sources import ASSETS_DIR, BUILTIN, JSONL, check_jsonl, iter_texts, resolve_input

BUILTIN_TOKENIZER_DIR = ASSETS_DIR / "tokenizer"
# The shipped tokenizers by name: the 8k BPE, and a 512-token BPE for wind-tunnel studies, where a large
# vocabulary's embedding would hold most of a narrow model's parameters and hide the width rules. Both are
# trained on the built-in corpus (`python -m bitcpm.data.tokenizer train --vocab-size N`).
BUILTIN_TOKENIZERS = {BUILTIN: BUILTIN_TOKENIZER_DIR, "builtin512": ASSETS_DIR / "tokenizer512"}
META_FILE = "bitcpm_tokenizer.json"
BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
SPECIAL_TOKENS = (BOS, EOS, UNK, PAD)
# Files whose bytes define how text maps to ids; all of them feed the fingerprint.
FINGERPRINT_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
# Bump when encode() semantics change (e.g. special-token handling) so cached datasets are rebuilt.
ENCODING_VERSION = "1"
_EOS_FALLBACKS = ("</s>", "<|endoftext|>", "<|im_end|>", "<eos>", "<|end_of_text|>")


class Tokenizer:
    """Uniform tokenizer interface: plain-text encoding without special tokens, plus special ids."""

    name: str
    vocab_size: int
    eos_id: int
    bos_id: int | None
    fingerprint: str

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no bos/eos added)."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of several texts, encoded in parallel where the backend can."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a list of token ids."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


class HFTokenizer(Tokenizer):
    """A `tokenizers` fast tokenizer read from tokenizer.json."""

    def __init__(self, directory: Path, name: str) -> None:
        from tokenizers import Tokenizer as RawTokenizer

        self.raw = RawTokenizer.from_file(str(directory / "tokenizer.json"))
        self.name = name
        self.fingerprint = tokenizer_fingerprint(directory)
        # Ids can exceed get_vocab_size() when added tokens leave holes; size embeddings by max id.
        self.vocab_size = max(self.raw.get_vocab(with_added_tokens=True).values()) + 1
        bos, eos = _special_token_names(directory)
        self.bos_id = self.raw.token_to_id(bos) if bos else None
        eos_candidates = [eos] if eos else list(_EOS_FALLBACKS)
        eos_ids = [self.raw.token_to_id(tok) for tok in eos_candidates]
        found = [i for i in eos_ids if i is not None]
        if not found:
            raise ValueError(f"tokenizer in {directory} has no end-of-text token (looked for {eos_candidates})")
        self.eos_id = found[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of several texts (rayon-parallel inside `tokenizers`)."""
        encodings = self.raw.encode_batch_fast(list(texts), add_special_tokens=False)
        return [enc.ids for enc in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a list of token ids."""
        return self.raw.decode(list(ids), skip_special_tokens=False)


class TransformersTokenizer(Tokenizer):
    """A sentencepiece tokenizer (tokenizer.model) loaded through `transformers.AutoTokenizer`."""

    def __init__(self, directory: Path, name: str) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ValueError(
                f"{directory} has only a sentencepiece tokenizer.model; install 'transformers' and "
                "'sentencepiece' to load it (or convert it to tokenizer.json)"
            ) from None
        self.raw = AutoTokenizer.from_pretrained(str(directory))
        self.name = name
        self.fingerprint = tokenizer_fingerprint(directory)
        self.vocab_size = len(self.raw)
        if self.raw.eos_token_id is None:
            raise ValueError(f"tokenizer in {directory} has no end-of-text token")
        self.eos_id = int(self.raw.eos_token_id)
        self.bos_id = None if self.raw.bos_token_id is None else int(self.raw.bos_token_id)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of several texts."""
        return [list(ids) for ids in self.raw(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a list of token ids."""
        return self.raw.decode(list(ids))


def _token_content(value: Any) -> str | None:
    """Special-token entries are either a string or a dict with a `content` field."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _special_token_names(directory: Path) -> tuple[str | None, str | None]:
    """(bos, eos) token strings from bitcpm metadata, tokenizer_config.json or special_tokens_map.json."""
    meta = directory / META_FILE
    if meta.is_file():
        data = json.loads(meta.read_text(encoding="utf-8"))
        return data.get("bos_token"), data.get("eos_token")
    bos = eos = None
    for filename in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / filename
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            # tokenizer_config.json is read last because it is what transformers itself trusts most.
            bos = _token_content(data.get("bos_token")) or bos
            eos = _token_content(data.get("eos_token")) or eos
    return bos, eos


def resolve_tokenizer_dir(spec: str | Path) -> Path:
    """Directory holding the tokenizer named by `spec` (`builtin` or a path)."""
    directory = BUILTIN_TOKENIZERS.get(str(spec), Path(spec))
    if not directory.is_dir():
        names = ", ".join(f"'{n}'" for n in BUILTIN_TOKENIZERS)
        raise ValueError(f"tokenizer not found: {directory} (pass {names} or a tokenizer directory)")
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        raise ValueError(f"{directory} contains neither tokenizer.json nor tokenizer.model")
    return directory


def tokenizer_fingerprint(spec: str | Path) -> str:
    """sha256 over the tokenizer's defining files (names and bytes), without loading it."""
    directory = resolve_tokenizer_dir(spec)
    digest = hashlib.sha256(f"bitcpm-tokenizer-v{ENCODING_VERSION}".encode())
    for filename in sorted((*FINGERPRINT_FILES, META_FILE)):
        path = directory / filename
        if path.is_file():
            digest.update(filename.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load `builtin`, a dir with tokenizer.json (HF fast), or a dir with a sentencepiece tokenizer.model."""
    directory = resolve_tokenizer_dir(path)
    name = str(path) if str(path) in BUILTIN_TOKENIZERS else directory.resolve().name
    if (directory / "tokenizer.json").is_file():
        return HFTokenizer(directory, name)
    return TransformersTokenizer(directory, name)


def check_tokenizer(spec: str | Path) -> Tokenizer:
    """The tokenizer a spec names, loaded; InputError (one line naming it) when it is missing or is not one."""
    path = Path(spec)
    if str(spec) != BUILTIN and path.is_file():
        raise InputError(f"{spec}: is a file; pass the directory that holds tokenizer.json or tokenizer.model")
    try:
        return load_tokenizer(spec)
    except (ValueError, OSError, ImportError) as exc:
        raise InputError(" ".join(str(exc).split()) or type(exc).__name__) from None
    except Exception as exc:  # a damaged tokenizer.json surfaces as the tokenizers library's own exception type
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{spec}: not a tokenizer that loads ({first})") from None


def _tokenizer_argument(value: str) -> str:
    check_tokenizer(value)
    return value


TOKENIZER = Kind("tokenizer", _tokenizer_argument)
"""A tokenizer on a command line: 'builtin' or a directory with tokenizer.json (or a sentencepiece tokenizer.model)."""


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path) -> Path:
    """Train a byte-level BPE on `texts`; write tokenizer.json and bitcpm metadata into `out_dir`."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
    raw = RawTokenizer(models.BPE())
    # No prefix space: encode() must round-trip text exactly, and documents are joined with eos anyway.
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw.save(str(out_dir / "tokenizer.json"))
    meta = {
        "type": "byte-level-bpe",
        "vocab_size": raw.get_vocab_size(with_added_tokens=True),
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        **{
            f"{key}_id": raw.token_to_id(tok)
            for key, tok in zip(("bos", "eos", "unk", "pad"), SPECIAL_TOKENS, strict=True)
        },
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out_dir


def parser() -> argparse.ArgumentParser:
    """The command line; every argument's kind is checked as it is read."""
    p = OneLineParser(prog="python -m bitcpm.data.tokenizer", description="bitcpm tokenizers")
    sub = p.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a byte-level BPE tokenizer")
    smallest = Range(lo=256 + len(SPECIAL_TOKENS))  # every byte and the special tokens
    train.add_argument("--vocab-size", type=number(int, smallest), default=8192)
    train.add_argument("--output", type=OUTPUT_DIR, required=True)
    train.add_argument("--input", nargs="+", type=JSONL, default=[BUILTIN], help="JSONL files (.gz/.xz) or 'builtin'")
    train.add_argument("--text-key", type=text("JSON field name"), default="text")
    info = sub.add_parser("info", help="print a tokenizer's vocab size, special ids and fingerprint")
    info.add_argument("tokenizer", type=TOKENIZER, help="'builtin' or a tokenizer directory")
    return p


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: `train` a BPE tokenizer or print `info` about one."""
    p = parser()
    args = p.parse_args(argv)
    if args.command == "train":
        try:  # the text key, in every input, before training starts
            for name in args.input:
                check_jsonl(name, args.text_key)
        except ValueError as exc:
            p.error(f"argument --input: {exc}")
        paths = [resolve_input(name) for name in args.input]
        texts = (doc for path in paths for doc in iter_texts(path, args.text_key))
        out = train_bpe_tokenizer(texts, args.vocab_size, args.output)
        print(f"wrote {out}")
        return
    tok = load_tokenizer(args.tokenizer)
    summary = {"name": tok.name, "vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id}
    print(json.dumps({**summary, "fingerprint": tok.fingerprint}))


if __name__ == "__main__":
    main()
