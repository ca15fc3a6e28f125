"""`--set section.key=value`: overrides validated like the config file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from tests.helpers.trainer import tiny_config
from training.commands import train as train_cli
from training.commands.overrides import (
    OverrideError,
    apply_overrides,
    load_config_with_overrides,
)
from training.config.errors import ConfigError


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fine.yaml"
    path.write_text(yaml.safe_dump(tiny_config(epochs=2).to_dict()))
    return path


def test_values_are_parsed_as_yaml_and_nested_keys_land_in_their_section() -> None:
    raw = {"task": "ctr", "optim": {"epochs": 2}}
    out = apply_overrides(
        raw,
        ["optim.epochs=5", "model.light_dims=[64, 32]", "model.sparse=false",
         "distill.variant=pfd", "optim.lr_dense=2e-3", "task=cvr"],
    )  # fmt: skip
    assert out == {
        "task": "cvr",
        "optim": {"epochs": 5, "lr_dense": 0.002},
        "model": {"light_dims": [64, 32], "sparse": False},
        "distill": {"variant": "pfd"},
    }
    assert raw == {"task": "ctr", "optim": {"epochs": 2}}  # the input is not modified


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.epochs", "expected SECTION.KEY=VALUE"),
        ("optim..epochs=1", "expected SECTION.KEY=VALUE"),
        ("task.name=1", "task is 'ctr', not a section"),
        ("optim.epochs=[1", "not valid YAML"),
    ],
)
def test_malformed_overrides_name_the_set(override: str, message: str) -> None:
    with pytest.raises(OverrideError, match="--set") as info:
        apply_overrides({"task": "ctr"}, [override])
    assert message in str(info.value)


def test_overrides_are_validated_like_the_file(config_file: Path) -> None:
    cfg = load_config_with_overrides(config_file, ["optim.epochs=7", "distill.variant=pfd"])
    assert cfg.optim.epochs == 7 and cfg.distill.variant == "pfd"
    with pytest.raises(ConfigError, match="epoch") as unknown:
        load_config_with_overrides(config_file, ["optim.epoch=7"])
    assert "--set optim.epoch=7" in str(unknown.value)
    with pytest.raises(ConfigError, match="bogus"):
        load_config_with_overrides(config_file, ["bogus.x=1"])
    with pytest.raises(ConfigError, match=r"optim\.epochs"):
        load_config_with_overrides(config_file, ["optim.epochs=many"])
    with pytest.raises(ConfigError, match="--config"):
        load_config_with_overrides(config_file.with_name("absent.yaml"), [])


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_train_refuses_a_bad_set_before_reading_data(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["--config", str(config_file), "--data", str(tmp_path / "absent"),
                   "--out", str(tmp_path / "run"), "--set", "optim.epoch=1"])  # fmt: skip
    assert train_cli.run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rocketrank train: ") and "--set optim.epoch=1" in err
    assert not (tmp_path / "run").exists()


def test_threads_default_to_the_cores_shared_among_processes(monkeypatch) -> None:
    monkeypatch.setattr(train_cli, "available_cores", lambda: 32)
    assert train_cli.default_threads(1) == 32
    assert train_cli.default_threads(4) == 8
    assert train_cli.default_threads(64) == 1
    assert _parse(["--config", "c", "--data", "d", "--out", "o"]).threads is None
