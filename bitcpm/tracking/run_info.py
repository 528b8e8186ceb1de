"""Run metadata: flattened config params, provenance tags and secret scrubbing."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
TRACKED_DISTRIBUTIONS = ("torch", "megatron-core", "hydra-core", "omegaconf", "mlflow", "bitcpm")

# --- config flattening -------------------------------------------------------------------------


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _plain(value: Any) -> Any:
    """Turn mapping/sequence look-alikes (e.g. OmegaConf containers) into dicts and lists for JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if _is_sequence(value):
        return [_plain(v) for v in value]
    return value


def _render(value: Any) -> str:
    if value is None:
        return "None"
    if _is_sequence(value):
        return json.dumps(_plain(value), separators=(",", ":"), default=str)
    return str(value)


def flatten_config(cfg: Mapping[str, Any]) -> dict[str, str]:
    """Flatten a nested mapping to dotted keys with string values (lists as compact JSON)."""
    flat: dict[str, str] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                if value:
                    walk(value, f"{name}.")
                else:
                    # Keep empty sections visible; they often mean "feature configured off".
                    flat[name] = "{}"
            else:
                flat[name] = _render(value)

    walk(cfg, "")
    return flat


# --- provenance tags ---------------------------------------------------------------------------


def _git(package_dir: Path, *args: str) -> str | None:
    """Run a read-only git command in the package's checkout; None when git or the repo is unavailable."""
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock while launchers run git concurrently.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        result = subprocess.run(
            ["git", "-C", str(package_dir), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout


def git_state(package_dir: Path | None = None) -> tuple[str, str]:
    """Return (commit, dirty) of the bitcpm source tree, each 'unknown' when it cannot be determined."""
    package_dir = package_dir or Path(__file__).resolve().parents[1]
    # A wheel install must not report the commit of whatever repo happens to enclose the venv.
    if {"site-packages", "dist-packages"} & set(package_dir.parts):
        return UNKNOWN, UNKNOWN
    head = _git(package_dir, "rev-parse", "HEAD")
    status = _git(package_dir, "status", "--porcelain")
    commit = head.strip() if head else UNKNOWN
    dirty = UNKNOWN if status is None else str(bool(status.strip())).lower()
    return commit, dirty


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def default_tags() -> dict[str, str]:
    """Provenance tags for every run: git state, key package versions, host and Python version."""
    commit, dirty = git_state()
    tags = {
        "bitcpm.git.commit": commit,
        "bitcpm.git.dirty": dirty,
        "bitcpm.host": socket.gethostname(),
        "bitcpm.python": platform.python_version(),
    }
    # importlib.metadata instead of imports: importing torch/megatron costs seconds on the CLI path.
    tags.update({f"bitcpm.version.{dist}": _version(dist) for dist in TRACKED_DISTRIBUTIONS})
    return tags


# --- secret scrubbing --------------------------------------------------------------------------

# Matched against the upper-cased key with camelCase split and separators normalised to "_".
# AUTH must not match AUTHOR (git author env vars, model card fields) but must match AUTHORIZATION.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_KEY|PRIVATE_KEY|AUTH(?!OR(?!IZ))")
# TOKEN is everywhere in LLM configs (max_tokens, tokenizer, eos_token), so it only marks a secret as
# the final word of the key (HF_TOKEN, api_token) and not after a tokenizer-vocabulary word.
_VOCAB_WORDS = frozenset(
    {"BOS", "EOS", "PAD", "UNK", "SEP", "CLS", "MASK", "SPECIAL", "START", "END", "STOP", "BEGIN"}
    | {"IMAGE", "ADDED", "EXTRA", "FILL", "NUM", "MAX", "MIN"}
)
# Env values this short or flag-like (HF_HUB_DISABLE_IMPLICIT_TOKEN=1) would scrub half the config.
_MIN_SECRET_VALUE_LEN = 6
_FLAG_VALUES = frozenset({"true", "false", "yes", "no", "none", "null", "on", "off"})
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^/\s@]+@")


def _words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.upper()) if w]


def is_secret_name(name: str) -> bool:
    """Whether a key or environment variable name looks like it holds a credential."""
    words = _words(name)
    if not words:
        return False
    if _SECRET_NAME.search("_".join(words)):
        return True
    last = words[-1]
    if not last.endswith("TOKEN"):
        return False
    qualifier = last[: -len("TOKEN")] or (words[-2] if len(words) > 1 else "")
    return qualifier not in _VOCAB_WORDS


def secret_env_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of secret-named environment variables that are long enough to match reliably."""
    environ = os.environ if environ is None else environ
    return {
        value
        for name, value in environ.items()
        if is_secret_name(name) and len(value) >= _MIN_SECRET_VALUE_LEN and value.lower() not in _FLAG_VALUES
    }


def scrub_secrets(d: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Drop entries with secret-looking keys or carrying an env secret; mask passwords in URLs."""
    secrets = secret_env_values(environ)
    clean: dict[str, str] = {}
    for key, value in d.items():
        key, value = str(key), str(value)
        if is_secret_name(key) or any(s in key or s in value for s in secrets):
            continue
        clean[key] = _URL_PASSWORD.sub(r"\g<head>***@", value)
    return clean
