"""Streaming a Parquet split yields exactly the in-memory batches."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.data import make_log, schema, write_frame
from training.data.dataset import Batch, encode_split, fit_encoder
from training.data.readers import DataReadError, read_columns
from training.data.streaming import StreamingSplit


def _assert_same(a: list[Batch], b: list[Batch]) -> None:
    assert [len(x) for x in a] == [len(y) for y in b]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.user, y.user) and torch.equal(x.group, y.group)
        assert x.features.keys() == y.features.keys()
        for k in x.features:
            assert x.features[k].dtype == y.features[k].dtype
            assert torch.equal(x.features[k], y.features[k]), k
        for k in x.labels:
            assert torch.equal(x.labels[k], y.labels[k]), k


@pytest.fixture(scope="module")
def split_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "train.parquet"
    # 233 rows in row groups of 40: chunks and row groups deliberately misaligned in some cases
    return write_frame(make_log(233, 4), path, row_group_size=40)


@pytest.mark.parametrize(
    ("chunk_rows", "batch_size", "shuffle", "task"),
    [
        (40, 16, True, None),  # chunk == row group
        (32, 50, True, None),  # chunks span row groups, batches span chunks
        (64, 7, False, None),
        (40, 10, True, "cvr"),  # filtered rows
        (25, 300, True, None),  # one batch bigger than a chunk
    ],
)
def test_streaming_equals_in_memory(
    split_file: Path, chunk_rows: int, batch_size: int, shuffle: bool, task: str | None
) -> None:
    s = schema()
    cols = read_columns(split_file, s)
    enc = fit_encoder(s, cols)
    memory = encode_split(s, enc, cols, chunk_rows=chunk_rows)
    if task:
        memory = memory.for_task(s, task)
    stream = StreamingSplit(split_file, s, enc, task=task, chunk_rows=chunk_rows)
    assert len(stream) == len(memory)
    for epoch in (0, 1):
        a = list(memory.iter_batches(batch_size, shuffle=shuffle, seed=11, epoch=epoch))
        b = list(stream.iter_batches(batch_size, shuffle=shuffle, seed=11, epoch=epoch))
        _assert_same(a, b)
    assert stream.num_batches(batch_size) == len(b)


def test_streaming_reads_one_chunk_at_a_time(split_file: Path) -> None:
    s = schema()
    enc = fit_encoder(s, read_columns(split_file, s))
    stream = StreamingSplit(split_file, s, enc, chunk_rows=40)
    seen: list[int] = []
    original = stream.encode_chunk

    def spy(chunk: int, report=None):  # type: ignore[no-untyped-def]
        out = original(chunk, report)
        seen.append(len(out))
        return out

    stream.encode_chunk = spy  # type: ignore[method-assign]
    batches = stream.iter_batches(16, shuffle=True, seed=0)
    next(batches)
    assert seen == [40] or seen == [233 % 40]  # the first batch needed exactly one chunk
    rows = sum(len(b) for b in batches) + 16
    assert rows == 233 and sum(seen) == 233 and max(seen) <= 40


def test_rows_of_a_range_span_row_groups(split_file: Path) -> None:
    s = schema()
    enc = fit_encoder(s, read_columns(split_file, s))
    stream = StreamingSplit(split_file, s, enc)
    full = read_columns(split_file, s)
    part = stream.read_rows(35, 125).column("user_id").to_numpy()
    assert part.tolist() == full["user_id"][35:125].tolist()


def test_streaming_needs_parquet(tmp_path: Path) -> None:
    path = write_frame(make_log(10, 0), tmp_path / "train.csv")
    s = schema()
    enc = fit_encoder(s, read_columns(path, s))
    with pytest.raises(DataReadError, match="Parquet"):
        StreamingSplit(path, s, enc)


def test_features_joined_from_side_tables_stream_identically(tmp_path: Path) -> None:
    from tests.helpers.data import write_data_dir
    from training.data.loader import load_dataset

    full = make_log(150, 6)
    item_cols = ["item_id", "price", "tags"]
    items = full[item_cols].drop_duplicates("item_id", keep="last")
    slim = full.drop(columns=["price", "tags"])
    a = load_dataset(write_data_dir(tmp_path / "full", frames={"train": full}), cache=False)
    root = write_data_dir(tmp_path / "slim", frames={"train": slim})
    write_frame(items, root / "items.parquet")
    b = load_dataset(root, cache=False, chunk_rows=40)
    # price/tags of train rows come from the catalogue (same values: last occurrence per item)
    joined = full.merge(items, on="item_id", suffixes=("_row", ""))
    assert len(joined) == 150
    memory = b.split("train")
    assert torch.equal(memory.features["item_id"], a.split("train").features["item_id"])
    stream = StreamingSplit(root / "train.parquet", b.schema, b.encoder, chunk_rows=40)
    assert stream.side_tables  # discovered beside the file
    _assert_same(
        list(memory.iter_batches(32, shuffle=True, seed=2)),
        list(stream.iter_batches(32, shuffle=True, seed=2)),
    )
    last = items.set_index("item_id").loc[slim["item_id"], "price"].to_numpy()
    expected = b.encoder.transform({"price": last}, names=["price"])["price"]
    assert np.allclose(memory.features["price"].numpy(), expected, equal_nan=True)


@pytest.mark.parametrize("task", [None, "cvr"])
def test_resuming_mid_epoch_yields_the_remaining_batches(
    split_file: Path, task: str | None
) -> None:
    s = schema()
    cols = read_columns(split_file, s)
    enc = fit_encoder(s, cols)
    memory = encode_split(s, enc, cols, chunk_rows=32)
    if task:
        memory = memory.for_task(s, task)
    stream = StreamingSplit(split_file, s, enc, task=task, chunk_rows=32)
    full = list(memory.iter_batches(9, shuffle=True, seed=4, epoch=3))
    for start in (0, 1, 4, len(full) - 1, len(full) + 2):
        # the trainer resumes mid-epoch by skipping the batches it already trained
        tail_memory = list(itertools.islice(memory.iter_batches(9, True, 4, 3), start, None))
        tail_stream = list(itertools.islice(stream.iter_batches(9, True, 4, 3), start, None))
        _assert_same(full[start:], tail_memory)
        _assert_same(full[start:], tail_stream)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n_rows=st.integers(1, 90),
    row_group=st.integers(1, 40),
    chunk_rows=st.integers(1, 50),
    batch_size=st.integers(1, 60),
    seed=st.integers(0, 2**32),
    task=st.sampled_from([None, "cvr"]),
)
def test_streaming_equals_in_memory_for_any_sizes(
    tmp_path: Path,
    n_rows: int,
    row_group: int,
    chunk_rows: int,
    batch_size: int,
    seed: int,
    task: str | None,
) -> None:
    s = schema()
    path = write_frame(make_log(n_rows, seed % 97), tmp_path / "train.parquet", row_group)
    cols = read_columns(path, s)
    enc = fit_encoder(s, cols)
    memory = encode_split(s, enc, cols, chunk_rows=chunk_rows)
    memory = memory.for_task(s, task) if task else memory
    stream = StreamingSplit(path, s, enc, task=task, chunk_rows=chunk_rows)
    a = list(memory.iter_batches(batch_size, shuffle=True, seed=seed, epoch=1))
    b = list(stream.iter_batches(batch_size, shuffle=True, seed=seed, epoch=1))
    _assert_same(a, b)
    assert sum(len(x) for x in a) == len(memory)
