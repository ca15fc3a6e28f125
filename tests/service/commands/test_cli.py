"""``rocketrank serve`` and ``rocketrank features load`` through the real dispatcher."""

from __future__ import annotations

import os

import pytest
import redis

from rocketrank.cli import main as cli
from service.feature_store.redis_store import RedisLayout
from tests.helpers import service as sf


@pytest.fixture()
def clean_env(monkeypatch):
    """serve_cli writes ROCKETRANK_* variables: give it a throwaway environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROCKETRANK_")}
    monkeypatch.setattr(os, "environ", env)
    return env


@pytest.mark.redis
def test_features_load_cli_writes_a_current_version(redis_url, key_prefix, tmp_path, capsys):
    sf.write_feature_tables(tmp_path)
    args = ["features", "load", "--redis", redis_url, "--data", str(tmp_path)]
    assert cli([*args, "--prefix", key_prefix, "--version", "v7"]) == 0
    assert "feature version v7 current" in capsys.readouterr().out
    client = redis.Redis.from_url(redis_url)
    assert client.get(RedisLayout(key_prefix).current) == b"v7"
    client.close()


def test_features_load_cli_names_a_missing_file(tmp_path, capsys):
    args = ["features", "load", "--redis", "redis://127.0.0.1:1/0", "--data", str(tmp_path)]
    assert cli(args) == 2
    assert "users.parquet does not exist" in capsys.readouterr().err


def test_serve_refuses_a_missing_repository(clean_env, tmp_path, capsys):
    sf.write_feature_tables(tmp_path / "data")
    args = ["serve", "--repo", str(tmp_path / "nope"), "--features", str(tmp_path / "data")]
    assert cli(args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_serve_refuses_unknown_rocketrank_variables(clean_env, tmp_path, capsys):
    clean_env["ROCKETRANK_WORKRES"] = "2"
    assert cli(["serve", "--repo", str(tmp_path), "--features", str(tmp_path)]) == 2
    assert "ROCKETRANK_WORKRES" in capsys.readouterr().err


def test_serve_needs_a_feature_source(clean_env, tmp_path, capsys):
    assert cli(["serve", "--repo", str(tmp_path)]) == 2
    assert "features_dir" in capsys.readouterr().err
