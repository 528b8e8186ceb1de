"""Mapping of arbitrary names to keys MLflow accepts for params, tags and metrics."""

from __future__ import annotations

import hashlib
import posixpath
import re

# MLflow allows alphanumerics, _ - . space : and /, and rejects names that change under normpath.
_INVALID_CHARS = re.compile(r"[^/\w.\- :]")
_HASH_LEN = 8


def _digest(name: str) -> str:
    return hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:_HASH_LEN]


def _is_unambiguous_path(key: str) -> bool:
    norm = posixpath.normpath(key)
    return norm == key and norm not in (".", "..") and not norm.startswith(("/", "../"))


def _with_suffix(key: str, suffix: str, max_len: int) -> str:
    return key[: max_len - len(suffix)] + suffix


def safe_key(name: str, max_len: int) -> str:
    """A deterministic MLflow-valid key for `name` (invalid characters become '_')."""
    key = _INVALID_CHARS.sub("_", name) or "_"
    if not _is_unambiguous_path(key):
        key = key.replace("/", "_")
        if key in (".", ".."):
            key = f"_{key}"
    if len(key) > max_len:
        # A hash of the full name keeps long keys that share a prefix distinct.
        key = _with_suffix(key, f"~{_digest(name)}", max_len)
    return key


class KeyMapper:
    """Remembers name→key choices so one name always maps to the same key and keys never collide."""

    def __init__(self, max_len: int) -> None:
        self._max_len = max_len
        self._keys: dict[str, str] = {}
        self._owners: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        """The key for `name`."""
        key = self._keys.get(name)
        if key is not None:
            return key
        key = safe_key(name, self._max_len)
        if self._owners.get(key, name) != name:
            key = _with_suffix(key, f"~{_digest(name)}", self._max_len)
        self._keys[name] = key
        self._owners[key] = name
        return key
