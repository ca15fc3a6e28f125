"""Broken training inputs through ``rocketrank train``: a clear error naming the
problem before any training, exit code 2, no traceback, and nothing written to
the run directory.

``tests/training/data/test_validate.py`` and
``tests/training/commands/test_data_check.py`` cover the individual checks of
the data layer (and ``rocketrank data check``); this file checks what the
person running the training job sees.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers.trainer import tiny_config, write_tiny_data
from training.commands import train as train_cli


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("tiny") / "data", rows=2_000)


def drop_column(directory: Path) -> None:
    frame = pd.read_parquet(directory / "train.parquet")
    # (a column the users/items side tables hold would be joined from them instead)
    frame.drop(columns=["user_cat_clicks_7d"]).to_parquet(directory / "train.parquet", index=False)


def wrong_type(directory: Path) -> None:
    frame = pd.read_parquet(directory / "valid.parquet")
    frame["user_cat_clicks_7d"] = "many"
    frame.to_parquet(directory / "valid.parquet", index=False)


def flip_bytes(directory: Path) -> None:
    data = bytearray((directory / "train.parquet").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    (directory / "train.parquet").write_bytes(bytes(data))


def truncate(directory: Path) -> None:
    data = (directory / "valid.parquet").read_bytes()
    (directory / "valid.parquet").write_bytes(data[: len(data) // 3])


def not_parquet(directory: Path) -> None:
    (directory / "train.parquet").write_text("user_id,item_id,click\n1,2,0\n")


def empty_split(directory: Path) -> None:
    frame = pd.read_parquet(directory / "valid.parquet")
    frame.iloc[:0].to_parquet(directory / "valid.parquet", index=False)


def labels_all_zero(directory: Path) -> None:
    frame = pd.read_parquet(directory / "train.parquet")
    frame["click"] = 0
    frame.to_parquet(directory / "train.parquet", index=False)


def missing_split(directory: Path) -> None:
    (directory / "valid.parquet").unlink()


BROKEN: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "schema-missing-column": (drop_column, ["train", "user_cat_clicks_7d"]),
    "schema-wrong-type": (wrong_type, ["valid", "user_cat_clicks_7d"]),
    "corrupted-parquet-bytes": (flip_bytes, ["train.parquet"]),
    "truncated-parquet": (truncate, ["valid.parquet"]),
    "csv-bytes-in-parquet": (not_parquet, ["train.parquet"]),
    "empty-split": (empty_split, ["valid", "empty"]),
    "missing-split": (missing_split, ["valid"]),
    "label-all-zeros": (labels_all_zero, ["click", "train"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_training_input_fails_before_training_and_writes_nothing(
    pristine, tmp_path, capsys, case
):
    damage, words = BROKEN[case]
    data = tmp_path / "data"
    shutil.copytree(pristine, data)
    damage(data)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config("rocket", epochs=1).to_dict()))
    out = tmp_path / "run"
    args = argparse.Namespace(
        config=config, data=data, out=out, resume=False, epochs=None, max_rows=None,
        teacher=None, checkpoint_every=0, early_stopping_metric="auc", threads=1,
        no_progress=True,
    )  # fmt: skip

    assert train_cli.run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rocketrank train: ")
    assert "Traceback" not in err
    for word in words:
        assert word in err, f"{case}: {word!r} not named in: {err}"
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
