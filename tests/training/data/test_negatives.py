"""Negative sampling for positive-only logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers.data import SCHEMA, make_log
from training.data.dataset import encode_split, fit_encoder
from training.data.negatives import item_catalogue, sample_negatives
from training.data.readers import frame_to_columns
from training.data.schema import Schema

NO_REQUEST = Schema.from_dict({**SCHEMA, "ids": {"user": "user_id", "item": "item_id"}})


def _positives(n: int = 150, seed: int = 0) -> pd.DataFrame:
    df = make_log(n, seed, n_users=10, n_items=40).drop(columns=["request_id"])
    df["click"] = 1
    df["conversion"] = 1
    return df


def _catalogue() -> pd.DataFrame:
    ids = np.arange(1, 41, dtype=np.int64) + 10_000_000_000
    return pd.DataFrame(
        {
            "item_id": ids,
            "price": ids.astype(np.float64) - 1e10,
            "tags": [[int(i % 7)] for i in ids],
        }
    )


def test_counts_labels_and_copied_columns() -> None:
    pos = _positives()
    out = sample_negatives(pos, NO_REQUEST, _catalogue(), n_neg=3, seed=1)
    assert len(out) == 4 * len(pos)
    assert list(out.columns) == list(pos.columns)
    neg = out[out["click"] == 0]
    assert len(neg) == 3 * len(pos) and (neg["conversion"] == 0).all()
    # each positive is followed by its three negatives, which copy its user and context
    for i in range(len(pos)):
        block = out.iloc[4 * i : 4 * i + 4]
        assert block["click"].tolist() == [1, 0, 0, 0]
        assert (block["user_id"] == pos["user_id"].iloc[i]).all()
        assert (block["city"] == pos["city"].iloc[i]).all()
        assert (block["hour"] == pos["hour"].iloc[i]).all()
    # item columns come from the catalogue, cross features are missing
    cat = _catalogue().set_index("item_id")
    np.testing.assert_array_equal(neg["price"].to_numpy(), cat.loc[neg["item_id"], "price"])
    assert [list(t) for t in neg["tags"]] == [list(t) for t in cat.loc[neg["item_id"], "tags"]]
    assert neg["user_item_clicks"].isna().all()
    assert set(neg["item_id"]) <= set(cat.index)


def test_negatives_exclude_the_users_positives() -> None:
    pos = _positives()
    out = sample_negatives(pos, NO_REQUEST, _catalogue(), n_neg=5, seed=2)
    liked = set(zip(pos["user_id"], pos["item_id"]))
    neg = out[out["click"] == 0]
    assert not liked & set(zip(neg["user_id"], neg["item_id"]))
    # without exclusion, collisions do occur on this dense log, so the test above means something
    raw = sample_negatives(pos, NO_REQUEST, _catalogue(), 5, seed=2, exclude_positives=False)
    raw_neg = raw[raw["click"] == 0]
    assert liked & set(zip(raw_neg["user_id"], raw_neg["item_id"]))


def test_a_user_who_likes_everything_gets_no_colliding_negatives() -> None:
    cat = _catalogue().iloc[:3]
    pos = pd.DataFrame(
        {"user_id": [1, 1, 1, 2], "item_id": [*cat["item_id"], cat["item_id"].iloc[0]]}
    )
    pos = pos.assign(**{c: 0 for c in ("city", "price")})
    out = sample_negatives(pos, NO_REQUEST, cat, n_neg=4, seed=0)
    neg = out[out["click"] == 0]
    assert (neg["user_id"] == 2).all() and len(neg) == 4
    assert set(neg["item_id"]) <= set(cat["item_id"].iloc[1:])
    # label columns absent from a positive-only log are added (1 for positives)
    assert out.loc[out["click"] == 1, "conversion"].eq(1).all()


def test_sampling_is_deterministic_in_the_seed() -> None:
    pos = _positives()
    a = sample_negatives(pos, NO_REQUEST, _catalogue(), 2, seed=5)
    b = sample_negatives(pos, NO_REQUEST, _catalogue(), 2, seed=5)
    c = sample_negatives(pos, NO_REQUEST, _catalogue(), 2, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not a["item_id"].equals(c["item_id"])


def test_catalogue_defaults_to_the_items_of_the_log_and_groups_fall_back_to_users() -> None:
    pos = _positives(80)
    out = sample_negatives(pos, NO_REQUEST, None, n_neg=2, seed=0)
    assert set(out["item_id"]) <= set(pos["item_id"])
    assert list(item_catalogue(pos, NO_REQUEST).columns) == ["item_id", "tags", "price"]
    cols = frame_to_columns(out)
    split = encode_split(NO_REQUEST, fit_encoder(NO_REQUEST, cols), cols)
    assert (split.group == split.user).all()
    assert split.labels["click"].sum() == 80
    # the sampled negatives' missing cross feature is imputed by the encoder, not an error
    assert not split.features["user_item_clicks"].isnan().any()


def test_bad_arguments() -> None:
    pos = _positives(10)
    with pytest.raises(ValueError, match="n_neg"):
        sample_negatives(pos, NO_REQUEST, None, -1, 0)
    with pytest.raises(ValueError, match="empty"):
        sample_negatives(pos, NO_REQUEST, _catalogue().iloc[:0], 1, 0)
    with pytest.raises(ValueError, match="item id column"):
        sample_negatives(pos, NO_REQUEST, pd.DataFrame({"x": [1]}), 1, 0)
    assert len(sample_negatives(pos, NO_REQUEST, None, 0, 0)) == 10
