"""Encoding and columnar batching of splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.contract.feature_spec import OOV_INDEX, PAD_INDEX
from models.contract.features import FeatureEncoder
from tests.helpers.data import SCHEMA, make_log, schema, write_data_dir, write_frame
from training.data.dataset import EncodedSplit, encode_split, fit_encoder
from training.data.loader import CACHE_DIR_NAME, load_dataset
from training.data.readers import frame_to_columns, read_columns
from training.data.schema import Schema
from training.data.shuffle import chunk_plan, epoch_order


def _split(n: int = 200, seed: int = 0, chunk_rows: int = 32) -> tuple[EncodedSplit, dict]:
    cols = frame_to_columns(make_log(n, seed))
    enc = fit_encoder(schema(), cols)
    return encode_split(schema(), enc, cols, chunk_rows=chunk_rows, name="train"), cols


def test_encoder_save_load_round_trip_gives_identical_encodings(tmp_path: Path) -> None:
    train = frame_to_columns(make_log(200, 0))
    valid = frame_to_columns(make_log(80, 1))
    enc = fit_encoder(schema(), train)
    enc.save(str(tmp_path / "encoder.json"))
    loaded = FeatureEncoder.load(str(tmp_path / "encoder.json"))
    assert loaded.spec_hash() == enc.spec_hash()
    a, b = enc.transform(valid), loaded.transform(valid)
    assert set(a) == {f["name"] for f in SCHEMA["features"]}
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_encoder_is_fitted_on_train_only_and_unseen_values_are_oov() -> None:
    train = make_log(200, 0)
    valid = make_log(6, 1)
    valid.loc[0, "item_id"] = 42  # never in train
    valid.loc[1, "city"] = "atlantis"
    valid.loc[2, "tags"] = [1, 999]
    valid["city"] = valid["city"].astype(object)
    valid.loc[3, "city"] = None
    valid.loc[4, "user_id"] = 123_456_789  # hashed: never OOV
    enc = fit_encoder(schema(), frame_to_columns(train))
    out = enc.transform(frame_to_columns(valid))
    assert out["item_id"][0] == OOV_INDEX and out["item_id"][1] >= 2
    assert out["city"][1] == OOV_INDEX and out["city"][3] == PAD_INDEX
    assert out["tags"][2, 0] >= 2 and out["tags"][2, 1] == OOV_INDEX
    assert out["tags"][2, 2] == PAD_INDEX
    assert out["user_id"][4] >= 2
    assert enc.cardinality("item_id") == 2 + train["item_id"].nunique()


def test_split_columns_follow_the_interface() -> None:
    split, cols = _split(100)
    assert len(split) == 100
    assert split.features["tags"].dtype == torch.int64 and split.features["tags"].shape == (100, 3)
    assert split.features["price"].dtype == torch.float32
    assert split.features["age"].dtype == torch.int64  # bucketised
    assert split.labels["click"].dtype == torch.float32
    np.testing.assert_array_equal(split.labels["conversion"].numpy(), cols["conversion"])
    np.testing.assert_array_equal(split.group.numpy(), cols["request_id"])
    np.testing.assert_array_equal(split.user.numpy(), cols["user_id"])


def test_group_falls_back_to_user_without_request_ids() -> None:
    data = {**SCHEMA, "ids": {"user": "user_id", "item": "item_id"}}
    s = Schema.from_dict(data)
    cols = frame_to_columns(make_log(50, 0).drop(columns=["request_id"]))
    split = encode_split(s, fit_encoder(s, cols), cols)
    assert torch.equal(split.group, split.user)


def test_unshuffled_batches_are_file_order_slices() -> None:
    split, cols = _split(100)
    batches = list(split.iter_batches(32))
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    assert split.num_batches(32) == 4
    user = torch.cat([b.user for b in batches])
    np.testing.assert_array_equal(user.numpy(), cols["user_id"])
    for name, values in split.features.items():
        assert torch.equal(torch.cat([b.features[name] for b in batches]), values)


def test_chunked_shuffle_semantics() -> None:
    split, _ = _split(200, chunk_rows=32)
    order = split.order(True, seed=7, epoch=0)
    # every row exactly once
    assert sorted(order.tolist()) == list(range(200))
    # rows stay inside their chunk: each visited chunk is one contiguous block of the order
    blocks, pos = [], 0
    for chunk, perm in chunk_plan(200, 32, seed=7, epoch=0):
        block = order[pos : pos + len(perm)]
        assert set((block // 32).tolist()) == {chunk}
        blocks.append(chunk)
        pos += len(perm)
    assert sorted(blocks) == list(range(7)) and blocks != sorted(blocks)
    # deterministic in (seed, epoch), different across epochs and seeds
    assert torch.equal(order, split.order(True, seed=7, epoch=0))
    assert not torch.equal(order, split.order(True, seed=7, epoch=1))
    assert not torch.equal(order, split.order(True, seed=8, epoch=0))


def test_shuffled_batches_gather_the_rows_of_the_order() -> None:
    split, cols = _split(120)
    order = split.order(True, seed=3, epoch=2).numpy()
    batches = list(split.iter_batches(50, shuffle=True, seed=3, epoch=2))
    assert [len(b) for b in batches] == [50, 50, 20]
    user = torch.cat([b.user for b in batches]).numpy()
    np.testing.assert_array_equal(user, cols["user_id"][order])
    labels = torch.cat([b.labels["click"] for b in batches]).numpy()
    np.testing.assert_array_equal(labels, cols["click"][order].astype(np.float32))


def test_task_filter_keeps_where_rows_in_the_same_shuffle_plan() -> None:
    split, cols = _split(200)
    cvr = split.for_task(schema(), "cvr")
    clicked = np.flatnonzero(cols["click"] == 1)
    assert len(cvr) == len(clicked)
    assert (cvr.labels["click"] == 1).all()
    np.testing.assert_array_equal(cvr.source_rows.numpy(), clicked)
    assert split.for_task(schema(), "ctr") is split
    # filtered order = full order with the unclicked rows removed
    full = epoch_order(200, 32, seed=5, epoch=1)
    expected = full[np.isin(full, clicked)]
    got = cvr.source_rows[cvr.order(True, seed=5, epoch=1)].numpy()
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="shape"):
        split.filter_rows(np.ones(3, dtype=bool))


def test_save_load_round_trip(tmp_path: Path) -> None:
    split, _ = _split(90)
    cvr = split.for_task(schema(), "cvr")
    cvr.save(tmp_path / "cvr.pt")
    back = EncodedSplit.load(tmp_path / "cvr.pt")
    assert len(back) == len(cvr) and back.n_source_rows == 90 and back.chunk_rows == 32
    a = list(cvr.iter_batches(8, shuffle=True, seed=1))
    b = list(back.iter_batches(8, shuffle=True, seed=1))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.user, y.user)
        for k in x.features:
            assert torch.equal(x.features[k], y.features[k])


def test_load_dataset_caches_the_encoded_result(tmp_path: Path) -> None:
    root = write_data_dir(tmp_path / "data")
    first = load_dataset(root)
    assert not first.from_cache
    assert first.encode_reports["train"].imputed["price"] > 0
    second = load_dataset(root)
    assert second.from_cache
    assert second.encoder.state() == first.encoder.state()
    assert second.validation.splits == first.validation.splits
    assert second.encode_reports == first.encode_reports
    for name in ("train", "valid", "test"):
        for k, v in first.splits[name].features.items():
            assert torch.equal(v, second.splits[name].features[k])
        assert torch.equal(first.splits[name].group, second.splits[name].group)
    # other tasks are another entry; a rewritten file invalidates
    assert not load_dataset(root, tasks=["ctr"]).from_cache
    write_frame(make_log(70, 9), root / "valid.parquet")
    stat = (root / "valid.parquet").stat()
    os.utime(root / "valid.parquet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    third = load_dataset(root)
    assert not third.from_cache and len(third.splits["valid"]) == 70
    # only the most recently used entries are kept
    assert len([p for p in (root / CACHE_DIR_NAME).iterdir()]) == 2


def test_a_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    root = write_data_dir(tmp_path / "data")
    load_dataset(root)
    (entry,) = (root / CACHE_DIR_NAME).iterdir()
    (entry / "train.pt").write_bytes(b"not a tensor file")
    again = load_dataset(root)
    assert not again.from_cache and len(again.splits["train"]) == 300
    assert load_dataset(root).from_cache


def test_load_dataset_reuses_a_given_encoder_and_reads_csv(tmp_path: Path) -> None:
    root = write_data_dir(tmp_path / "csv", fmt="csv")
    train = read_columns(root / "train.csv", schema())
    other = fit_encoder(schema(), frame_to_columns(make_log(40, 11)))
    data = load_dataset(root, encoder=other, cache=False)
    assert data.encoder is other
    assert not (root / CACHE_DIR_NAME).exists()
    expected = other.transform(train)
    for k, v in expected.items():
        np.testing.assert_array_equal(data.splits["train"].features[k].numpy(), v)
    assert len(data.split("valid", task="cvr")) == int(
        pd.read_csv(root / "valid.csv")["click"].sum()
    )


def test_huge_int_ids_with_nulls_encode_like_int64_ids() -> None:
    big = [2**62 + 1, 2**62 + 2, 2**62 + 3]
    s = Schema.from_dict(
        {
            **SCHEMA,
            "tasks": {"ctr": {"label": "click"}},
            "features": [
                {"name": "item_id", "type": "categorical", "side": "item"},
                {"name": "user_id", "type": "categorical", "side": "user", "encoding": "hash",
                 "buckets": 1000},
            ],
        }
    )  # fmt: skip
    clean = pd.DataFrame({"item_id": big, "user_id": big})
    holed = pd.DataFrame(
        {
            "item_id": pd.array([big[0], None, big[2]], dtype="Int64"),
            "user_id": pd.array([None, big[1], big[2]], dtype="Int64"),
        }
    )
    clean_cols, holed_cols = frame_to_columns(clean), frame_to_columns(holed)
    assert holed_cols["item_id"].dtype == object  # float64 would round these ids
    enc = fit_encoder(s, holed_cols)
    assert enc.vocabs["item_id"].is_int
    assert enc.vocabs["item_id"].keys.tolist() == [big[0], big[2]]
    from training.data.dataset import encode_features

    a, b = encode_features(enc, clean_cols), encode_features(enc, holed_cols)
    assert a["item_id"].tolist() == [2, OOV_INDEX, 3]
    assert b["item_id"].tolist() == [2, PAD_INDEX, 3]
    assert b["user_id"][0] == PAD_INDEX and (b["user_id"][1:] == a["user_id"][1:]).all()
