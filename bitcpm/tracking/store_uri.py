"""Where runs go: tracking URI and experiment (config, else MLflow's environment variables, else defaults)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SQLITE_FILE = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"
_SQLITE_PREFIX = "sqlite:///"
DEFAULT_EXPERIMENT = "bitcpm"
# MLflow's own variables: a user's shell setting applies wherever the config leaves the value unset.
URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"


def sqlite_path(uri: str) -> Path | None:
    """Database file of a `sqlite:///` URI, or None for other stores and in-memory databases."""
    if not uri.startswith(_SQLITE_PREFIX):
        return None
    path = uri[len(_SQLITE_PREFIX) :].split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return Path(path)


SQLITE_MAGIC = b"SQLite format 3\x00"


def unreadable_store(uri: str) -> str | None:
    """Why a store that is only read (a study's runs) cannot be: a sqlite file that is missing or is not a
    database (opening it would create an empty store, or fail deep inside MLflow); None when it can be."""
    path = sqlite_path(uri)
    if path is None:
        return None
    if not path.is_file():
        return f"no MLflow store at {path}"
    with open(path, "rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return f"{path} is not an SQLite database"
    return None


def resolve_experiment(name: str | None) -> str:
    """The experiment to use: tracking.experiment, else $MLFLOW_EXPERIMENT_NAME, else 'bitcpm'."""
    return name or os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT


def resolve_store_uri(uri: str | None) -> str:
    """The tracking URI to use: tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here."""
    uri = uri or os.environ.get(URI_ENV) or f"{_SQLITE_PREFIX}{DEFAULT_SQLITE_FILE}"
    path = sqlite_path(uri)
    if path is None:
        return uri
    # Pin relative paths now: Hydra may chdir into the run's output directory later.
    query = uri.partition("?")[2]
    absolute = f"{_SQLITE_PREFIX}{path.resolve()}"
    return f"{absolute}?{query}" if query else absolute


def default_artifact_location(uri: str) -> str | None:
    """Artifact root for new experiments: next to a sqlite database, else the store's own default."""
    path = sqlite_path(uri)
    if path is None:
        return None
    # MLflow's default would be ./mlruns under whatever the working directory happens to be.
    return (path.resolve().parent / ARTIFACTS_DIRNAME).as_uri()
