"""Validation: every class of problem is found, named, and reported together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.data import SCHEMA, make_log, schema, write_data_dir
from training.data.loader import load_dataset
from training.data.readers import frame_to_columns
from training.data.schema import Schema
from training.data.validate import (
    ANY,
    DataValidationError,
    Problem,
    ValidationReport,
    validate_columns,
)


def _frames() -> dict[str, pd.DataFrame]:
    return {"train": make_log(200, 0), "valid": make_log(60, 1), "test": make_log(60, 2)}


def _validate(frames: dict[str, pd.DataFrame], tasks: list[str] | None = None) -> ValidationReport:
    return validate_columns(schema(), {k: frame_to_columns(v) for k, v in frames.items()}, tasks)


def _find(report: ValidationReport, split: str, column: str) -> list[str]:
    return [p.message for p in report.problems if p.split == split and p.column == column]


def test_clean_data_has_no_problems_and_counts_imputed_values() -> None:
    report = _validate(_frames())
    assert report.ok, report.problems
    train = report.splits["train"]
    assert train.rows == 200
    df = make_log(200, 0)
    assert train.nonfinite["price"] == int((~np.isfinite(df["price"])).sum()) > 0
    assert train.label_rates["click"] == pytest.approx(df["click"].mean())
    assert train.missing["tags"] == sum(len(t) == 0 for t in df["tags"])


def test_missing_column_is_named() -> None:
    frames = _frames()
    frames["valid"] = frames["valid"].drop(columns=["city"])
    report = _validate(frames)
    assert _find(report, "valid", "city") == ["required column is missing"]
    assert not _find(report, "train", "city")


def test_wrong_types_are_named() -> None:
    frames = _frames()
    train = frames["train"]
    train["price"] = train["price"].astype(object)
    train.loc[3, "price"] = "cheap"
    train["item_id"] = train["item_id"].astype(np.float64)
    train.loc[5, "item_id"] = 1.5
    frames["valid"]["user_id"] = frames["valid"]["user_id"].astype(str) + "u"
    frames["test"]["city"] = [[c] for c in frames["test"]["city"]]
    frames["test"]["tags"] = 7
    report = _validate(frames)
    (price,) = _find(report, "train", "price")
    assert "non-numeric" in price and "'cheap'" in price
    (item,) = _find(report, "train", "item_id")
    assert "non-integer float" in item and "1.5" in item
    (user,) = _find(report, "valid", "user_id")
    assert "must be integers" in user and "strings" in user
    (city,) = _find(report, "test", "city")
    assert "multi_categorical" in city
    (tags,) = _find(report, "test", "tags")
    assert "lists" in tags


def test_integral_float_ids_are_accepted_but_null_ids_are_not() -> None:
    frames = _frames()
    frames["train"]["item_id"] = frames["train"]["item_id"].astype(np.float64)
    assert _validate(frames).ok
    frames["valid"]["user_id"] = frames["valid"]["user_id"].astype("Int64")
    frames["valid"].loc[[0, 1], "user_id"] = pd.NA
    (msg,) = _find(_validate(frames), "valid", "user_id")
    assert "2 null(s)" in msg


def test_label_problems() -> None:
    frames = _frames()
    frames["valid"]["click"] = frames["valid"]["click"].astype(np.float64)
    frames["valid"].loc[[0, 1, 2], "click"] = np.nan
    frames["test"].loc[[4], "conversion"] = 2
    frames["test"].loc[[5], "conversion"] = -1
    report = _validate(frames)
    assert _find(report, "valid", "click") == ["label has 3 null(s)"]
    (msg,) = _find(report, "test", "conversion")
    assert "0 or 1" in msg and "2 row(s)" in msg and "2" in msg and "-1" in msg


def test_constant_train_labels_only_for_requested_tasks() -> None:
    frames = _frames()
    frames["train"]["click"] = 0
    frames["train"]["conversion"] = 0
    report = _validate(frames, tasks=["ctr"])
    (msg,) = _find(report, "train", "click")
    assert "all zeros" in msg and "'ctr'" in msg

    frames = _frames()
    frames["train"]["conversion"] = frames["train"]["click"]  # every click converts
    assert _validate(frames, tasks=["ctr"]).ok
    (msg,) = _find(_validate(frames, tasks=["cvr"]), "train", "conversion")
    assert "all ones" in msg and "click == 1" in msg


def test_unknown_task_empty_and_absent_splits() -> None:
    frames = _frames()
    frames["test"] = frames["test"].iloc[:0]
    cols: dict = {k: frame_to_columns(v) for k, v in frames.items()}
    cols["valid"] = None
    report = validate_columns(schema(), cols, tasks=["ctr", "ltv"])
    messages = {(p.split, p.column): p.message for p in report.problems}
    assert "unknown task 'ltv'" in messages[(ANY, ANY)]
    assert "empty" in messages[("test", ANY)]
    assert "not found" in messages[("valid", ANY)]
    assert report.tasks == ["ctr"]


def test_side_table_needs_unique_ids() -> None:
    frames = _frames()
    items = pd.DataFrame({"item_id": [1, 2, 2], "price": [1.0, 2.0, 3.0]})
    report = validate_columns(
        schema(),
        {k: frame_to_columns(v) for k, v in frames.items()},
        side_tables={"items": frame_to_columns(items), "users": frame_to_columns(items)},
    )
    assert "duplicated" in _find(report, "items", "item_id")[0]
    assert "lacks its id column" in _find(report, "users", "user_id")[0]


def test_every_problem_is_reported_at_once_before_training(tmp_path: Path) -> None:
    frames = _frames()
    frames["train"] = frames["train"].drop(columns=["hour"])
    frames["valid"].loc[0, "click"] = 3
    frames["test"]["age"] = "old"
    root = write_data_dir(tmp_path, frames=frames)
    with pytest.raises(DataValidationError) as info:
        load_dataset(root, tasks=["ctr"], cache=False)
    problems = info.value.problems
    assert {(p.split, p.column) for p in problems} == {
        ("train", "hour"),
        ("valid", "click"),
        ("test", "age"),
    }
    text = str(info.value)
    assert "3 data problem(s)" in text and "[train.hour] required column is missing" in text
    assert not (tmp_path / ".rocketrank_cache").exists()


def test_problem_str_names_split_and_column() -> None:
    assert str(Problem("valid", "price", "bad")) == "[valid.price] bad"
    assert str(Problem("test", ANY, "split is empty")) == "[test] split is empty"


def test_hashed_ids_must_have_one_kind_across_splits() -> None:
    hashed = {"encoding": "hash", "buckets": 32}
    data = {
        **SCHEMA,
        "features": [
            {**f, **hashed} if f["name"] in ("city", "topics") else f for f in SCHEMA["features"]
        ],
    }
    frames = _frames()
    frames["valid"]["city"] = np.arange(len(frames["valid"]))
    frames["test"]["topics"] = [[1, 2]] * len(frames["test"])
    report = validate_columns(
        Schema.from_dict(data), {k: frame_to_columns(v) for k, v in frames.items()}
    )
    (topics,) = _find(report, "test", "topics")
    assert "int values but train holds str values" in topics
    (city,) = _find(report, "valid", "city")
    assert "hash to different buckets" in city
    assert len(report.problems) == 2
