"""A split may be one Parquet file, a directory of Parquet files or a Hive dataset."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.helpers.data import SCHEMA, make_log, write_frame
from training.config.run import RunConfig
from training.data.data_dir import find_data_files
from training.data.loader import load_dataset
from training.data.prepare import prepare_data
from training.data.readers import DataReadError, read_columns
from training.data.source import SplitSource

DAYS = ["2026-11-28", "2026-11-29", "2026-11-30"]


def _schema_with_day() -> dict:
    schema = copy.deepcopy(SCHEMA)
    # the Hive partition column is a feature like any other
    schema["features"].append({"name": "day", "type": "categorical", "side": "context", "dim": 4})
    return schema


def _frames(rows: int = 240) -> dict[str, pd.DataFrame]:
    out = {}
    for i, split in enumerate(("train", "valid", "test")):
        df = make_log(rows if split == "train" else rows // 3, seed=i)
        df["day"] = np.array(DAYS)[np.arange(len(df)) * len(DAYS) // len(df)]
        out[split] = df
    return out


def _write(root: Path, frames: dict[str, pd.DataFrame], hive: bool) -> Path:
    root.mkdir(parents=True)
    (root / "schema.yaml").write_text(yaml.safe_dump(_schema_with_day(), sort_keys=False))
    for split, df in frames.items():
        if not hive:
            write_frame(df, root / f"{split}.parquet", row_group_size=50)
            continue
        for day in DAYS:
            part = df[df["day"] == day].drop(columns="day").reset_index(drop=True)
            folder = root / split / f"day={day}"
            folder.mkdir(parents=True)
            # two files per day: rows keep their order (sorted relative paths)
            half = len(part) // 2
            write_frame(part.iloc[:half], folder / "part-0.parquet", row_group_size=30)
            write_frame(part.iloc[half:], folder / "part-1.parquet", row_group_size=30)
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    frames = _frames()
    base = tmp_path_factory.mktemp("layouts")
    return _write(base / "file", frames, hive=False), _write(base / "hive", frames, hive=True)


def _cfg(chunk_rows: int) -> RunConfig:
    return RunConfig.from_dict(
        {"task": "ctr", "stage": "fine", "data": {"batch_size": 32, "chunk_rows": chunk_rows}}
    )


def test_a_hive_split_is_found_and_reads_the_partition_column(dirs: tuple[Path, Path]) -> None:
    _, hive = dirs
    files = find_data_files(hive)
    assert files.splits["train"] == hive / "train"
    source = SplitSource(files.splits["train"])
    assert source.partition_columns == ["day"]
    assert "day" in source.columns
    assert len(source.pieces) > 3  # row groups of several files
    table = source.read_rows(25, 130, ["day", "user_id"])
    assert table.num_rows == 105
    assert table.column_names == ["day", "user_id"]


def test_hive_columns_equal_the_single_file_columns(dirs: tuple[Path, Path]) -> None:
    single, hive = dirs
    a = read_columns(single / "train.parquet", columns=["user_id", "tags", "day", "price"])
    b = read_columns(hive / "train", columns=["user_id", "tags", "day", "price"])
    assert list(a) == list(b)
    np.testing.assert_array_equal(a["user_id"], b["user_id"])
    np.testing.assert_array_equal(a["day"], b["day"])
    np.testing.assert_array_equal(a["price"], b["price"])
    assert all(np.array_equal(x, y) for x, y in zip(a["tags"], b["tags"], strict=True))


def test_hive_split_encodes_like_the_single_file_in_memory(dirs: tuple[Path, Path]) -> None:
    single, hive = dirs
    a = load_dataset(single, tasks=["ctr"], cache=False)
    b = load_dataset(hive, tasks=["ctr"], cache=False)
    assert a.encoder.state() == b.encoder.state()
    assert "day" in b.encoder.vocabs and len(b.encoder.vocabs["day"]) == len(DAYS)
    for name in ("train", "valid", "test"):
        x, y = a.splits[name], b.splits[name]
        for k in x.features:
            assert torch.equal(x.features[k], y.features[k]), (name, k)
        assert torch.equal(x.user, y.user) and torch.equal(x.group, y.group)


def test_hive_split_streams_and_fits_like_the_single_file(dirs: tuple[Path, Path]) -> None:
    single, hive = dirs
    a = prepare_data(single, _cfg(chunk_rows=64), cache=False)
    b = prepare_data(hive, _cfg(chunk_rows=64), cache=False)
    assert a.dataset.encoder.state() == b.dataset.encoder.state()
    for x, y in zip(
        a.train.iter_batches(32, shuffle=True, seed=3, epoch=1),
        b.train.iter_batches(32, shuffle=True, seed=3, epoch=1),
        strict=True,
    ):
        for k in x.features:
            assert torch.equal(x.features[k], y.features[k]), k
        assert torch.equal(x.labels["click"], y.labels["click"])
    assert torch.equal(a.test.labels["click"], b.test.labels["click"])
    assert torch.equal(a.test.group, b.test.group)


def test_a_directory_without_parquet_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "notes.txt").write_text("nothing here")
    with pytest.raises(DataReadError, match="parquet"):
        read_columns(tmp_path / "train")


def test_a_split_as_file_and_directory_is_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    write_frame(make_log(10, 0), tmp_path / "train" / "part-0.parquet")
    write_frame(make_log(10, 0), tmp_path / "train.parquet")
    with pytest.raises(DataReadError, match="keep one"):
        find_data_files(tmp_path)


@pytest.mark.parametrize("chunk_rows", [0, 64])
def test_hive_split_trains_like_the_single_file(
    dirs: tuple[Path, Path], tmp_path: Path, chunk_rows: int
) -> None:
    from tests.helpers.trainer import tiny_config
    from training.loop.options import TrainOptions
    from training.loop.trainer import train

    single, hive = dirs
    cfg = tiny_config("rocket", epochs=1, batch_size=32, data={"chunk_rows": chunk_rows})
    states = []
    for name, root in (("file", single), ("hive", hive)):
        train(
            cfg,
            prepare_data(root, cfg, cache=False),
            tmp_path / name,
            TrainOptions(progress=False, threads=1),
        )
        states.append(torch.load(tmp_path / name / "model.pt", weights_only=True)["model"])
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
