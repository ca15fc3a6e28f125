"""The synthetic log in memory: determinism, shape of the feed, and the effects it promises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.contract.features import FeatureEncoder
from training.data.schema import Schema
from training.evaluate import auc
from training.synth.config import LOG_START, SPLITS, SynthConfig, SynthConfigError
from training.synth.generator import _generate, generate
from training.synth.history import NO_SHOP_CLICK_DAYS
from training.synth.log_schema import INTERACTED_FEATURES, POST_CLICK_FEATURES, schema_dict
from training.synth.world import SECONDS_PER_DAY

ROWS = 20_000


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return generate(ROWS, seed=7)


@pytest.fixture(scope="module")
def log(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([frames[s] for s in SPLITS], ignore_index=True)


def test_same_seed_same_frames_and_other_seed_differs() -> None:
    a = generate(3_000, seed=11, users=400, items=300)
    b = generate(3_000, seed=11, users=400, items=300)
    c = generate(3_000, seed=12, users=400, items=300)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert not a["train"]["user_id"].equals(c["train"]["user_id"])
    assert not np.allclose(a["train"]["p_click"], c["train"]["p_click"])


def test_ids_are_large_distinct_int64(frames: dict[str, pd.DataFrame], log: pd.DataFrame) -> None:
    for col in ("request_id", "user_id", "item_id", "category_id", "shop_id", "brand_id", "ts"):
        assert log[col].dtype == np.int64, col
    users, items = frames["users"], frames["items"]
    assert users["user_id"].is_unique and items["item_id"].is_unique
    assert users["user_id"].min() >= 10**9 and items["item_id"].min() >= 10**9
    # production-like ids: not a contiguous range
    assert users["user_id"].max() - users["user_id"].min() > 100 * len(users)
    assert set(log["user_id"]) <= set(users["user_id"])
    assert set(log["item_id"]) <= set(items["item_id"])


def test_log_rows_carry_the_entity_features(
    frames: dict[str, pd.DataFrame], log: pd.DataFrame
) -> None:
    items = frames["items"].set_index("item_id")
    users = frames["users"].set_index("user_id")
    sample = log.sample(500, random_state=0)
    for col in ("category_id", "shop_id", "brand_id", "price", "price_bucket"):
        np.testing.assert_array_equal(sample[col].to_numpy(), items.loc[sample["item_id"], col])
    for col in ("age_bucket", "gender", "city_tier", "activity_level", "purchasing_power"):
        np.testing.assert_array_equal(sample[col].to_numpy(), users.loc[sample["user_id"], col])
    row_tags = [list(t) for t in sample["tags"]]
    item_tags = [list(t) for t in items.loc[sample["item_id"], "tags"]]
    assert row_tags == item_tags
    assert all(1 <= len(t) <= 5 and len(set(t)) == len(t) for t in item_tags)


def test_pages_have_positions_one_to_p_and_no_repeated_item(log: pd.DataFrame) -> None:
    pages = log.groupby("request_id")
    assert (pages["position"].min() == 1).all()
    sizes = pages.size()
    assert (sizes == 10).mean() > 0.99  # only a truncated last page may be shorter
    assert (pages["position"].max() == sizes).all()
    assert (pages["item_id"].nunique() == sizes).all()
    assert (pages["user_id"].nunique() == 1).all() and (pages["ts"].nunique() == 1).all()
    assert log["hour"].equals((log["ts"] - LOG_START) % SECONDS_PER_DAY // 3600)


def test_splits_follow_request_time(frames: dict[str, pd.DataFrame]) -> None:
    train, valid, test = (frames[s] for s in SPLITS)
    assert len(train) + len(valid) + len(test) == ROWS
    assert len(train) == pytest.approx(0.8 * ROWS, abs=10)
    assert len(valid) == pytest.approx(0.1 * ROWS, abs=10)
    assert train["ts"].max() <= valid["ts"].min() and valid["ts"].max() <= test["ts"].min()
    assert not set(train["request_id"]) & set(valid["request_id"])
    assert not set(valid["request_id"]) & set(test["request_id"])


def test_click_rate_and_oracle_auc_are_feed_like(log: pd.DataFrame) -> None:
    ctr = log["click"].mean()
    assert 0.01 <= ctr <= 0.20
    # the stored probability is the one the clicks were drawn from
    assert log["p_click"].mean() == pytest.approx(ctr, rel=0.1)
    assert auc(log["click"].to_numpy(), log["p_click"].to_numpy()) > 0.7
    assert auc(log["click"].to_numpy(), np.random.default_rng(0).random(len(log))) < 0.6


def test_position_bias_is_strong(log: pd.DataFrame) -> None:
    by_pos = log.groupby("position")["click"].mean()
    assert by_pos.loc[1] > 3 * by_pos.loc[10]
    # the true probability falls with position too (not only the observed rate)
    p_by_pos = log.groupby("position")["p_click"].mean().to_numpy()
    assert (np.diff(p_by_pos) < 0).all()


def test_interacted_features_carry_click_signal(log: pd.DataFrame) -> None:
    y = log["click"].to_numpy()
    assert auc(y, log["user_cat_clicks_7d"].to_numpy()) > 0.55
    assert auc(y, log["user_shop_clicks_30d"].to_numpy()) > 0.55
    assert auc(y, -log["user_shop_days_since_click"].to_numpy()) > 0.55


def test_interacted_features_add_signal_beyond_the_latent_affinity() -> None:
    frames, parts = _generate(SynthConfig(ROWS, seed=7))
    log = pd.concat([frames[s] for s in SPLITS], ignore_index=True)
    # everything in the click logit except the interacted term, in quintiles
    rest = parts.drop(columns="interacted").sum(axis=1)
    quintile = pd.qcut(rest, 5, labels=False)
    history = (log["user_cat_clicks_7d"] > 0) | (log["user_shop_clicks_30d"] > 0)
    table = log.groupby([quintile, history])["click"].agg(["sum", "count"]).unstack()
    # clicks of rows with history vs what the same strata give without history
    expected = (table[("count", True)] * table[("sum", False)] / table[("count", False)]).sum()
    assert table[("sum", True)].sum() > 1.5 * expected, table  # ~1.15 when the terms are zero
    rates = table["sum"] / table["count"]
    assert (rates[True] > rates[False]).iloc[1:].all(), rates  # the lowest stratum has ~20 clicks
    # and the history is not a copy of the affinity
    corr = np.corrcoef(parts["affinity"], np.log1p(log["user_cat_clicks_7d"]))[0, 1]
    assert 0.05 < corr < 0.6


def test_interacted_features_are_a_daily_batch_of_the_history(log: pd.DataFrame) -> None:
    # one value per (request, category) and per (request, shop): computed per day, not per row
    assert (log.groupby(["request_id", "category_id"])["user_cat_clicks_7d"].nunique() == 1).all()
    assert (log.groupby(["request_id", "shop_id"])["user_shop_clicks_30d"].nunique() == 1).all()
    days = log["user_shop_days_since_click"]
    assert ((days > 0) & (days <= NO_SHOP_CLICK_DAYS)).all()
    assert ((days == NO_SHOP_CLICK_DAYS) == (log["user_shop_clicks_30d"] == 0)).mean() > 0.9
    # the log's own clicks enter the history from the next day on
    day = (log["ts"] - LOG_START) // SECONDS_PER_DAY
    clicks = log.loc[log["click"] == 1, ["user_id", "shop_id", "ts"]].assign(
        click_day=day[log["click"] == 1]
    )
    later = log[["user_id", "shop_id", "ts", "user_shop_clicks_30d", "user_shop_days_since_click"]]
    later = later.assign(day=day).merge(clicks, on=["user_id", "shop_id"], suffixes=("", "_c"))
    later = later[(later["day"] > later["click_day"]) & (later["day"] < later["click_day"] + 30)]
    assert len(later) > 20
    assert (later["user_shop_clicks_30d"] >= 1).all()
    since = (later["ts"] - later["ts_c"]) / SECONDS_PER_DAY
    assert (later["user_shop_days_since_click"] <= since + 1e-3).all()


def test_conversions_follow_post_click_behaviour(log: pd.DataFrame) -> None:
    unclicked = log[log["click"] == 0]
    assert (unclicked["conversion"] == 0).all() and (unclicked["p_conversion"] == 0).all()
    assert (unclicked[POST_CLICK_FEATURES] == 0).all().all()
    clicked = log[log["click"] == 1]
    assert (clicked["dwell_time_s"] > 0).all()
    cvr = clicked["conversion"].mean()
    assert 0.01 < cvr < 0.5
    y = clicked["conversion"].to_numpy()
    assert auc(y, clicked["p_conversion"].to_numpy()) > 0.75
    assert auc(y, clicked["dwell_time_s"].to_numpy()) > 0.6
    carted = clicked["added_to_cart"] == 1
    assert clicked.loc[carted, "conversion"].mean() > 2 * clicked.loc[~carted, "conversion"].mean()


def test_feature_columns_have_no_missing_values(log: pd.DataFrame) -> None:
    cols = [*INTERACTED_FEATURES, *POST_CLICK_FEATURES, "price", "position", "hour", "device"]
    assert not log[cols].isna().any().any()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"rows": 0}, "rows"),
        ({"rows": 1000, "page_size": 0}, "page_size"),
        ({"rows": 1000, "users": 3}, "users"),
        ({"rows": 1000, "items": True}, "items"),
        ({"rows": 1000, "days": 1}, "days"),
        ({"rows": 1000, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, named: str) -> None:
    with pytest.raises(SynthConfigError, match=named):
        generate(**kwargs)


def test_frames_encode_in_memory_through_the_feature_contract(
    frames: dict[str, pd.DataFrame],
) -> None:
    schema = Schema.from_dict(schema_dict())
    encoder = FeatureEncoder(schema.features)
    encoder.fit({c: frames["train"][c] for c in schema.feature_names})
    encoded = encoder.transform({c: frames["test"][c] for c in schema.feature_names})
    lengths = (encoded["tags"] > 0).sum(axis=1)
    np.testing.assert_array_equal(lengths, frames["test"]["tags"].map(len).to_numpy())
    assert set(np.unique(encoded["device"])) <= {2, 3, 4}  # three known devices, no OOV
