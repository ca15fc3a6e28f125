"""Encoding a chunk from its Arrow table equals the canonical-column path, value for value."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.helpers.data import SCHEMA, make_log
from training.data.arrow_encode import encode_table
from training.data.dataset import EncodedColumns, encode_columns, fit_encoder
from training.data.readers import join_side_tables, table_to_columns
from training.data.schema import Schema


def _schema(hashed: bool) -> Schema:
    spec = copy.deepcopy(SCHEMA)
    if hashed:  # the string and bag features hashed instead of looked up
        for f in spec["features"]:
            if f["name"] in ("city", "tags", "topics"):
                f.update(encoding="hash", buckets=16)
    return Schema.from_dict(spec)


def _table(rows: int, seed: int) -> pa.Table:
    """A log with nulls, empty and null bags, over-long bags and unseen values."""
    df = make_log(rows, seed)
    rng = np.random.default_rng(seed)
    city = df["city"].astype(object).to_numpy().copy()
    city[rng.random(rows) < 0.1] = None
    city[rng.random(rows) < 0.05] = "atlantis"  # unseen by the fit
    df["city"] = city
    tags = list(df["tags"])
    for i in np.flatnonzero(rng.random(rows) < 0.1):
        tags[i] = None
    for i in np.flatnonzero(rng.random(rows) < 0.1):
        tags[i] = [1, 2, 3, 4, 5, 99]  # longer than max_len, 99 unseen
    df["tags"] = tags
    return pa.Table.from_pandas(df, preserve_index=False)


def _assert_equal(a: EncodedColumns, b: EncodedColumns) -> None:
    assert a.features.keys() == b.features.keys()
    for name in b.features:
        assert a.features[name].dtype == b.features[name].dtype, name
        assert torch.equal(a.features[name], b.features[name]), name
    for name in b.labels:
        assert torch.equal(a.labels[name], b.labels[name]), name
    assert torch.equal(a.user, b.user) and torch.equal(a.group, b.group)


@pytest.mark.parametrize("hashed", [False, True])
def test_arrow_encoding_equals_the_canonical_path(hashed: bool) -> None:
    schema = _schema(hashed)
    encoder = fit_encoder(schema, table_to_columns(_table(300, 1)))
    table = _table(257, 2)
    _assert_equal(
        encode_table(schema, encoder, table),
        encode_columns(schema, encoder, table_to_columns(table)),
    )
    # a slice (a chunk inside a row group) and a table of several Arrow chunks
    part = table.slice(31, 100)
    _assert_equal(
        encode_table(schema, encoder, part),
        encode_columns(schema, encoder, table_to_columns(part)),
    )
    several = pa.concat_tables([table.slice(0, 50), table.slice(50)])
    _assert_equal(
        encode_table(schema, encoder, several),
        encode_columns(schema, encoder, table_to_columns(several)),
    )


def test_features_the_split_lacks_are_joined_from_side_tables() -> None:
    schema = _schema(False)
    full = _table(300, 3)
    encoder = fit_encoder(schema, table_to_columns(full))
    users = table_to_columns(full.select(["user_id", "city", "topics", "age"]))
    keep = [n for n in full.column_names if n not in ("topics", "age")]
    split = full.select(keep)  # city stays in the split: never replaced by the side table's
    side = {"users": users}
    want = encode_columns(schema, encoder, join_side_tables(schema, table_to_columns(split), side))
    _assert_equal(encode_table(schema, encoder, split, side), want)


def test_bags_with_null_elements_take_the_canonical_path() -> None:
    schema = _schema(False)
    table = _table(120, 4)
    encoder = fit_encoder(schema, table_to_columns(table))
    tags = table.column("tags").to_pylist()
    tags[5] = [1, None, 3]
    table = table.set_column(
        table.column_names.index("tags"), "tags", pa.array(tags, pa.list_(pa.int64()))
    )
    _assert_equal(
        encode_table(schema, encoder, table),
        encode_columns(schema, encoder, table_to_columns(table)),
    )
