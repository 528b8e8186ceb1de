"""Tests for config flattening, provenance tags and secret scrubbing."""

from __future__ import annotations

import json

import pytest

from bitcpm.tracking.run_info import (
    TRACKED_DISTRIBUTIONS,
    default_tags,
    flatten_config,
    git_state,
    is_secret_name,
    scrub_secrets,
)

pytestmark = pytest.mark.quick


def test_flatten_config_nested_lists_and_none():
    cfg = {
        "model": {"hidden": 256, "layers": [1, 2, 3], "extra": None, "act": {"name": "silu", "gated": True}},
        "optim": {"betas": (0.9, 0.95), "groups": [{"lr": 1e-3, "decay": None}]},
        "empty": {},
        "seed": 7,
    }
    assert flatten_config(cfg) == {
        "model.hidden": "256",
        "model.layers": "[1,2,3]",
        "model.extra": "None",
        "model.act.name": "silu",
        "model.act.gated": "True",
        "optim.betas": "[0.9,0.95]",
        "optim.groups": '[{"lr":0.001,"decay":null}]',
        "empty": "{}",
        "seed": "7",
    }


def test_flatten_config_accepts_omegaconf_containers():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"a": {"b": [1, {"c": 2}]}, "d": None})
    flat = flatten_config(cfg)
    assert flat == {"a.b": '[1,{"c":2}]', "d": "None"}
    assert json.loads(flat["a.b"]) == [1, {"c": 2}]


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "GITHUB_TOKEN",
        "data.hub_token",
        "hfToken",
        "AWS_SECRET_ACCESS_KEY",
        "OPENAI_API_KEY",
        "tracking.apiKey",
        "db.password",
        "LDAP_PASSWD",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "ssh.private_key",
        "HTTP_AUTHORIZATION",
        "oauth.client",
        "MLFLOW_TRACKING_TOKEN",
    ],
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "tokenizer.path",
        "data.max_tokens",
        "tokenizer.eos_token",
        "tokenizer.pad_token_id",
        "special_tokens",
        "train.tokens_per_step",
        "TOKENIZERS_PARALLELISM",
        "GIT_AUTHOR_NAME",
        "model.author",
        "optim.lr",
    ],
)
def test_non_secret_names(name):
    assert not is_secret_name(name)


def test_scrub_secrets_by_name_env_value_and_url_password():
    environ = {
        "BITCPM_TEST_API_TOKEN": "s3cr3t",
        # Too short / flag-like to be matched by value, or nothing would survive.
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "SOME_AUTH_FLAG": "true",
        "HOME": "/home/user",
    }
    scrubbed = scrub_secrets(
        {
            "data.hub_token": "whatever",
            "data.url": "https://user:s3cr3t@hub.example/x",
            "s3cr3t": "used as a key",
            "mirror": "https://bob:pw123456@mirror.example/x",
            "flag": "1",
            "enabled": "true",
            "seq_len": 4096,
        },
        environ=environ,
    )
    assert scrubbed == {
        "mirror": "https://bob:***@mirror.example/x",
        "flag": "1",
        "enabled": "true",
        "seq_len": "4096",
    }


def test_scrub_secrets_reads_process_environment(monkeypatch):
    monkeypatch.setenv("BITCPM_TEST_API_TOKEN", "s3cr3t")
    assert scrub_secrets({"a": "x-s3cr3t-y", "b": "fine"}) == {"b": "fine"}


def test_default_tags_are_strings_with_versions():
    tags = default_tags()
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in tags.items())
    for dist in TRACKED_DISTRIBUTIONS:
        assert f"bitcpm.version.{dist}" in tags
    assert tags["bitcpm.version.omegaconf"].startswith("2.3")
    assert {"bitcpm.git.commit", "bitcpm.git.dirty", "bitcpm.host", "bitcpm.python"} <= tags.keys()
    assert tags["bitcpm.git.dirty"] in ("true", "false", "unknown")


def test_git_state_unknown_without_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_state() == ("unknown", "unknown")


def test_git_state_unknown_for_installed_wheel(tmp_path):
    assert git_state(tmp_path / "site-packages" / "bitcpm") == ("unknown", "unknown")


def test_git_state_reads_a_repository(tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    try:
        subprocess.run([*git, "init", "-q"], check=True)
        (repo / "f.txt").write_text("x")
        subprocess.run([*git, "add", "f.txt"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git not usable here")
    commit, dirty = git_state(repo)
    assert len(commit) == 40 and dirty == "false"
    (repo / "f.txt").write_text("y")
    assert git_state(repo) == (commit, "true")
