"""Readers: one canonical numpy representation whatever the file format or dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.helpers.data import make_log, schema, write_frame
from training.data.data_dir import find_data_files
from training.data.dataset import fit_encoder
from training.data.readers import (
    DataReadError,
    arrow_to_numpy,
    frame_to_columns,
    read_columns,
    split_bags,
    to_numpy_column,
)


def test_nullable_and_arrow_integer_ids_become_int64() -> None:
    ids = [3, 10_000_000_000, 7]
    for series in (
        pd.Series(ids, dtype="Int64"),
        pd.Series(ids, dtype="int64[pyarrow]"),
        pd.Series(ids, dtype="uint64"),
        pa.chunked_array([ids[:1], ids[1:]], pa.int64()),
    ):
        out = to_numpy_column(series)
        assert out.dtype == np.int64
        assert out.tolist() == ids
    small = to_numpy_column(pd.Series([1, 2], dtype="uint16[pyarrow]"))
    assert small.dtype == np.int64 and small.tolist() == [1, 2]


def test_integers_with_nulls_keep_exact_values() -> None:
    small = to_numpy_column(pd.Series([5, None, 9], dtype="Int64"))
    assert small.dtype == np.float64
    assert small[0] == 5 and np.isnan(small[1])
    # float64 would round 2**60 + 1; such columns stay exact Python ints
    big = to_numpy_column(pd.Series([2**60 + 1, None], dtype="Int64"))
    assert big.dtype == object
    assert big[0] == 2**60 + 1 and big[1] is None


def test_uint64_beyond_int64_is_refused() -> None:
    with pytest.raises(DataReadError, match="does not fit in int64"):
        arrow_to_numpy(pa.array([2**63 + 5], pa.uint64()))


def test_list_columns_become_object_arrays_of_arrays_even_when_sliced() -> None:
    arr = pa.array([[1, 2], None, [], [3]], pa.list_(pa.int64()))
    out = arrow_to_numpy(arr.slice(1))
    assert out[0] is None
    assert out[1].tolist() == [] and out[2].tolist() == [3]
    assert out[2].dtype == np.int64


def test_split_bags_converts_integer_tokens_and_drops_empty_ones() -> None:
    ints = split_bags(pa.array(["1|2", None, "", "3||4"]), "|")
    assert ints.type == pa.list_(pa.int64())
    assert ints.to_pylist() == [[1, 2], [], [], [3, 4]]
    strings = split_bags(pa.array(["a;b", "c"]), ";")
    assert strings.to_pylist() == [["a", "b"], ["c"]]


def test_parquet_lists_and_csv_strings_encode_identically(tmp_path: Path) -> None:
    df = make_log(120, seed=3)
    s = schema()
    pq_cols = read_columns(write_frame(df, tmp_path / "log.parquet"), s)
    csv_cols = read_columns(write_frame(df, tmp_path / "log.csv"), s)
    enc_pq = fit_encoder(s, pq_cols)
    enc_csv = fit_encoder(s, csv_cols)
    assert enc_pq.state() == enc_csv.state()
    a, b = enc_pq.transform(pq_cols), enc_pq.transform(csv_cols)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # the bags really are multi-valued and non-trivial
    assert (a["tags"] > 1).sum(axis=1).max() == 3
    assert (a["topics"] > 1).any()


def test_frame_and_file_columns_agree(tmp_path: Path) -> None:
    df = make_log(50, seed=1)
    from_file = read_columns(write_frame(df, tmp_path / "log.parquet"))
    from_frame = frame_to_columns(df)
    assert list(from_file) == list(from_frame)
    for name in from_file:
        assert from_file[name].dtype == from_frame[name].dtype, name


def test_read_only_requested_columns_and_missing_files(tmp_path: Path) -> None:
    path = write_frame(make_log(10, seed=0), tmp_path / "train.parquet")
    cols = read_columns(path, columns=["user_id", "nope"])
    assert list(cols) == ["user_id"]
    with pytest.raises(DataReadError, match="file not found"):
        read_columns(tmp_path / "valid.parquet")
    with pytest.raises(DataReadError, match="unknown format"):
        read_columns(tmp_path / "x.json")


def test_find_data_files_refuses_ambiguous_split(tmp_path: Path) -> None:
    df = make_log(10, seed=0)
    write_frame(df, tmp_path / "train.parquet")
    write_frame(df, tmp_path / "items.parquet")
    files = find_data_files(tmp_path)
    assert set(files.splits) == {"train"} and set(files.side_tables) == {"items"}
    assert files.schema is None
    write_frame(df, tmp_path / "train.csv")
    with pytest.raises(DataReadError, match=r"both train\.parquet and train\.csv"):
        find_data_files(tmp_path)
    with pytest.raises(DataReadError, match="not found"):
        find_data_files(tmp_path / "absent")


@pytest.mark.parametrize("kind", ["int", "str"])
def test_vectorised_bag_path_matches_the_general_loop(kind: str) -> None:
    from models.contract.categorical import bag_matrix
    from models.contract.feature_spec import FeatureSpec

    rng = np.random.default_rng(0)
    spec = FeatureSpec(name="tags", type="multi_categorical", side="item", max_len=3)
    cells = np.empty(300, dtype=object)
    for i in range(len(cells)):
        n = int(rng.integers(0, 6))
        if rng.random() < 0.1:
            cells[i] = None
        elif kind == "int":
            cells[i] = rng.integers(0, 50, n).astype(np.int64)
        else:
            cells[i] = np.asarray([f"t{v}" for v in rng.integers(0, 50, n)], dtype=object)
    fast_flat, fast_pos = bag_matrix(cells, spec)
    slow_flat, slow_pos = bag_matrix(list(cells), spec)  # a list takes the Python loop
    assert fast_flat.dtype == slow_flat.dtype
    np.testing.assert_array_equal(fast_flat, slow_flat)
    np.testing.assert_array_equal(fast_pos, slow_pos)
    empty = np.empty(2, dtype=object)
    empty[:] = [np.zeros(0, np.int64), None]
    flat, pos = bag_matrix(empty, spec)
    assert flat.dtype == np.int64 and len(flat) == 0 and (pos == -1).all()


def test_side_tables_fill_missing_feature_columns_by_id() -> None:
    from training.data.readers import join_side_tables

    s = schema()
    split = frame_to_columns(
        pd.DataFrame({"user_id": [10, 11, 10], "item_id": [5, 6, 99], "price": [1.0, 2.0, 3.0]})
    )
    items = frame_to_columns(
        pd.DataFrame(
            {"item_id": [6, 5, 5], "price": [60.0, 50.0, 51.0], "tags": [[1], [2, 3], [4]]}
        )
    )
    users = frame_to_columns(pd.DataFrame({"user_id": [11, 10], "city": ["lyon", "nice"]}))
    out = join_side_tables(s, split, {"items": items, "users": users})
    assert out["price"] is split["price"]  # present columns are never replaced
    assert [None if t is None else t.tolist() for t in out["tags"]] == [[4], [1], None]
    assert out["city"].tolist() == ["nice", "lyon", "nice"]
    ints = join_side_tables(s, split, {"items": frame_to_columns(
        pd.DataFrame({"item_id": [5], "hour": [7]}))})  # fmt: skip
    assert ints["hour"].dtype == np.float64 and ints["hour"][0] == 7
    assert np.isnan(ints["hour"][1:]).all()
