"""A run's tokenizer as Hugging Face files, so `AutoTokenizer.from_pretrained(export_dir)` loads it.

The built-in tokenizer is a bare `tokenizers` tokenizer.json plus bitcpm metadata; transformers also needs a
tokenizer_config.json naming the class and the special tokens. Encoding stays bitcpm's: no bos/eos added.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bitcpm.data.tokenizer import _EOS_FALLBACKS, META_FILE, load_tokenizer, resolve_tokenizer_dir

_HF_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def _special_tokens(directory: Path) -> dict[str, str]:
    """bos/eos/unk/pad token strings of a tokenizer directory."""
    meta = directory / META_FILE
    if meta.is_file():
        data = json.loads(meta.read_text(encoding="utf-8"))
        return {k: data[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if data.get(k)}
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(directory / "tokenizer.json"))
    eos = next(t for t in _EOS_FALLBACKS if raw.token_to_id(t) is not None)
    return {"eos_token": eos, "pad_token": eos}


def write_tokenizer(spec: str, out: Path, max_length: int) -> dict[str, int | None]:
    """Write the tokenizer named by data.tokenizer into `out`; returns its bos/eos/pad ids."""
    src = resolve_tokenizer_dir(spec)
    tok = load_tokenizer(spec)
    out.mkdir(parents=True, exist_ok=True)
    copied = [name for name in _HF_FILES if (src / name).is_file()]
    for name in copied:
        shutil.copyfile(src / name, out / name)
    if "tokenizer_config.json" not in copied:
        # A bare tokenizer.json (the built-in one): describe it for transformers.
        special = _special_tokens(src)
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "model_max_length": max_length,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    pad_name = _special_tokens(src).get("pad_token") if "tokenizer_config.json" not in copied else None
    pad = tok.raw.token_to_id(pad_name) if pad_name and hasattr(tok.raw, "token_to_id") else None
    pad = tok.eos_id if pad is None else pad
    return {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": pad}
