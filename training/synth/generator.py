"""A synthetic e-commerce impression log whose click and conversion model is known.

The log imitates a feed: users with demographic features, items in categories,
shops and brands with prices and tags, and requests (a user, an hour, a device)
that each show a page of ``page_size`` items at positions ``1..page_size``.
Clicks and conversions are drawn from a documented model (``CLICK`` and
``CONVERSION`` below, explained in ``docs/SYNTHETIC.md``), and the true
probabilities are stored next to the labels, so every trained model can be
compared with the ceiling (the oracle AUC in ``stats.json``).

How the truth is built, in one paragraph: every user and item has a latent
vector (``LATENT_DIM``); part of it follows from observable features
(demographics; category, shop, brand, tags) and the rest is idiosyncratic, so
ids carry signal of their own. The standardised dot product (the affinity) is
the largest term of the click logit. A simulated click history (background
traffic the log does not show, plus the log's own clicks) gives the user×item
interacted features -- the user's clicks on the item's category in 7 days and
on its shop in 30 days, days since the last click on the shop -- computed
by a daily batch job as of the end of the previous day. The history follows the
user's interests (affinity plus a per user×category taste the latent vectors do
not know, plus a few favourite shops), and the realised counts enter the click
logit with their own coefficients. Position bias is strong and the page order
itself comes from a noisy previous ranker, as in a real log. Conversions on
clicked rows are driven by a purchase intent that shows in post-click
behaviour (dwell time, reviews viewed, chat with the seller, add to cart).

That paragraph is the default ``feed`` world. Its parameters, and those of
the other worlds (``interests``: best of several interests instead of a dot
product, a dominant per (user, category) taste, weaker position bias, a heavier
item tail, users who join late), are typed data in :mod:`training.synth.worlds`;
``world="interests"`` selects one.

Everything is vectorised numpy; the only Python loop runs over days (the
daily feature job), and the output is a deterministic function of the
arguments.

Usage::

    frames = generate(rows=200_000, seed=1)       # dict of DataFrames
    stats = write("data/", rows=200_000, seed=1)  # Parquet + schema.yaml + stats.json
    frames = generate(rows=200_000, seed=1, world="interests")
"""

# Over 400 lines: the generative story (requests, pages, clicks, conversions, files) is
# one seeded sequence of RNG draws; its order is part of the output, so it stays together.

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from training.data.schema import Schema, load_schema
from training.evaluate import auc
from training.synth import world
from training.synth.world import DEVICES, MAX_TAGS, SECONDS_PER_DAY
from training.synth.worlds import (
    DEFAULT_WORLD,
    FEED,
    WORLDS,
    ClickModel,
    ConversionModel,
    World,
)

ROW_GROUP_ROWS = 65_536
"""Parquet row-group size; the data layer streams one row group per chunk."""

SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # of requests, in request-time order

LOG_START = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
"""Unix seconds of the first day of the log (``ts`` is int64 Unix seconds)."""

NO_SHOP_CLICK_DAYS = 90.0
"""``user_shop_days_since_click`` when the user has no click on the shop in the history."""


CLICK: ClickModel = FEED.click
"""The click model of the default ``feed`` world (each world has its own: ``WORLDS``)."""
CONVERSION: ConversionModel = FEED.conversion

USER_FEATURES = ["age_bucket", "gender", "city_tier", "activity_level", "purchasing_power"]
ITEM_FEATURES = ["category_id", "shop_id", "brand_id", "price", "price_bucket", "tags"]
CONTEXT_FEATURES = ["position", "hour", "device"]
INTERACTED_FEATURES = ["user_cat_clicks_7d", "user_shop_clicks_30d", "user_shop_days_since_click"]
POST_CLICK_FEATURES = ["dwell_time_s", "reviews_viewed", "chatted_with_seller", "added_to_cart"]
LOGIT_TERMS = ["affinity", "position", "context", "user_item_bias", "taste", "interacted"]
REFERENCE_POSITION = 1
"""The position the debiased oracle scores every row at (the top slot, ln 1 = 0)."""


class SynthConfigError(ValueError):
    """Arguments that cannot produce a sensible log; the message names the argument."""


@dataclass(frozen=True)
class SynthConfig:
    """Size of the generated log.

    Attributes:
        rows: impressions in the log (all splits).
        seed: RNG seed; the same config gives the same content.
        users: number of users (default scales sub-linearly with rows: 20k at 200k rows).
        items: number of items (default 10k at 200k rows).
        page_size: items per request, positions 1..page_size.
        days: days covered by the log (the split is by request time).
        world: the data-generating world, a key of ``WORLDS`` (``training.synth.worlds``).
    """

    rows: int
    seed: int = 0
    users: int | None = None
    items: int | None = None
    page_size: int = 10
    days: int = 14
    world: str = DEFAULT_WORLD

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise SynthConfigError(f"world must be one of {sorted(WORLDS)}, got {self.world!r}")
        checks = [
            ("page_size", self.page_size, 1, 1_000),
            ("rows", self.rows, 10 * max(self.page_size, 1), 10**9),
            ("days", self.days, 3, 365),
            ("seed", self.seed, 0, 2**63 - 1),
        ]
        if self.users is not None:
            checks.append(("users", self.users, 10, 10**7))
        if self.items is not None:
            checks.append(("items", self.items, 20, 10**7))
        for name, value, low, high in checks:
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise SynthConfigError(
                    f"{name} must be an integer in [{low}, {high}], got {value!r}"
                )

    @property
    def spec(self) -> World:
        """The parameters of ``world``."""
        return WORLDS[self.world]

    @property
    def n_users(self) -> int:
        return self.users or max(50, round(20_000 * math.sqrt(self.rows / 200_000)))

    @property
    def n_items(self) -> int:
        return self.items or max(50, round(10_000 * math.sqrt(self.rows / 200_000)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- impressions


@dataclass
class _Impressions:
    """Rows of the log before labels: indices into the world, in request-time order."""

    n_requests: int
    request: np.ndarray  # int64 [N] request index (0 = earliest)
    request_id: np.ndarray  # int64 [R]
    user: np.ndarray  # int64 [N] user index
    item: np.ndarray  # int64 [N] item index
    position: np.ndarray  # int64 [N] 1..page_size
    t: np.ndarray  # int64 [N] seconds since LOG_START
    hour: np.ndarray  # int64 [N]
    device: np.ndarray  # int64 [N] index into DEVICES
    affinity: np.ndarray  # float64 [N] latent user·item affinity


def _requests(rng: np.random.Generator, cfg: SynthConfig, users: world.Users) -> dict:
    """Who opens the feed when, on which device; sorted by time."""
    n_req = -(-cfg.rows // cfg.page_size)
    weight = users.request_weight / users.request_weight.sum()
    user = rng.choice(len(users.ids), size=n_req, p=weight)
    hour_weight = 1.0 + 0.8 * np.cos(2 * np.pi * (np.arange(24) - 21) / 24)
    hour = rng.choice(24, size=n_req, p=hour_weight / hour_weight.sum())
    day = rng.integers(0, cfg.days, n_req)
    t = day * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 3600, n_req)
    if users.is_new is not None:  # a new user's requests before they join go to an old user
        early = users.is_new[user] & (t < _join_seconds(cfg))
        old_weight = np.where(users.is_new, 0.0, weight)
        user[early] = rng.choice(
            len(users.ids), size=int(early.sum()), p=old_weight / old_weight.sum()
        )
    usual = rng.random(n_req) < 0.85
    device = np.where(usual, users.device[user], rng.integers(0, len(DEVICES), n_req))
    order = np.argsort(t, kind="stable")
    return {
        "id": world.unique_ids(rng, n_req, 10**11, 10**12),
        "user": user[order],
        "t": t[order],
        "hour": hour[order],
        "device": device[order],
    }


def _join_seconds(cfg: SynthConfig) -> float:
    """When the world's new users join, in seconds since ``LOG_START``."""
    return cfg.spec.new_user_join * cfg.days * SECONDS_PER_DAY


def _fill_pages(
    rng: np.random.Generator, req_user: np.ndarray, page: int, picker: world.ItemPicker
) -> np.ndarray:
    """Items shown per request, int64 [R, page], without repeats inside a page."""
    shown = picker.mixed(np.repeat(req_user, page), rng).reshape(-1, page)
    for _ in range(5):
        order = np.argsort(shown, axis=1, kind="stable")
        sorted_items = np.take_along_axis(shown, order, axis=1)
        dup_sorted = np.zeros_like(shown, dtype=bool)
        dup_sorted[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
        if not dup_sorted.any():
            break
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        shown[dup] = picker.from_popular(int(dup.sum()), rng)
    return shown


def _impressions(
    rng: np.random.Generator,
    cfg: SynthConfig,
    users: world.Users,
    items: world.Items,
    picker: world.ItemPicker,
) -> _Impressions:
    """Requests, their pages, and the page order a noisy previous ranker chose."""
    req = _requests(rng, cfg, users)
    P, n_req = cfg.page_size, len(req["user"])
    shown = _fill_pages(rng, req["user"], P, picker)
    user = np.repeat(req["user"], P)
    affinity = world.user_item_affinity(users, items.latent, user, shown.ravel())
    click = cfg.spec.click
    belief = (
        affinity
        + click.item_quality * items.quality[shown.ravel()]
        + click.previous_ranker_noise * rng.normal(size=n_req * P)
    )
    order = np.argsort(-belief.reshape(n_req, P), axis=1, kind="stable")
    shown = np.take_along_axis(shown, order, axis=1)
    affinity = np.take_along_axis(affinity.reshape(n_req, P), order, axis=1)
    n = cfg.rows  # the last page may be cut short
    request = np.repeat(np.arange(n_req), P)[:n]
    return _Impressions(
        n_requests=n_req,
        request=request,
        request_id=req["id"],
        user=user[:n],
        item=shown.ravel()[:n],
        position=np.tile(np.arange(1, P + 1), n_req)[:n],
        t=req["t"][request],
        hour=req["hour"][request],
        device=req["device"][request],
        affinity=affinity.ravel()[:n],
    )


# --------------------------------------------------------------------------- labels


def _history_indexes(
    user: np.ndarray, item: np.ndarray, t: np.ndarray, items: world.Items, days: int
) -> tuple[world.EventIndex, world.EventIndex]:
    """Click events indexed by (user, category) and by (user, shop)."""
    return (
        world.EventIndex(user * items.n_categories + items.category[item], t, days),
        world.EventIndex(user * items.n_shops + items.shop[item], t, days),
    )


def _interacted_features(
    imp: _Impressions,
    rows: slice,
    day: int,
    items: world.Items,
    history: list[tuple[world.EventIndex, world.EventIndex]],
) -> dict[str, np.ndarray]:
    """Daily-batch interacted features of ``rows`` (all on ``day``) as of the end of
    ``day - 1``, summed over the event indexes in ``history``."""
    user, item = imp.user[rows], imp.item[rows]
    cutoff = day * SECONDS_PER_DAY
    cat_key = user * items.n_categories + items.category[item]
    shop_key = user * items.n_shops + items.shop[item]
    cat7 = np.zeros(len(user), np.int64)
    shop30 = np.zeros(len(user), np.int64)
    last = np.full(len(user), -np.inf)
    for by_cat, by_shop in history:
        cat7 += by_cat.count(cat_key, cutoff - 7 * SECONDS_PER_DAY, cutoff)
        shop30 += by_shop.count(shop_key, cutoff - 30 * SECONDS_PER_DAY, cutoff)
        last = np.maximum(last, by_shop.last_before(shop_key, cutoff))
    days_since = (imp.t[rows] - last) / SECONDS_PER_DAY  # inf without a click
    return {
        "user_cat_clicks_7d": cat7,
        "user_shop_clicks_30d": shop30,
        "user_shop_days_since_click": np.round(np.minimum(days_since, NO_SHOP_CLICK_DAYS), 3),
    }


def _interacted_pieces(feats: Any, click: ClickModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three interacted click-logit terms: category count, shop count, shop recency."""
    return (
        click.cat_clicks_7d * np.log1p(np.asarray(feats["user_cat_clicks_7d"])),
        click.shop_clicks_30d * np.log1p(np.asarray(feats["user_shop_clicks_30d"])),
        click.shop_recency * np.exp(-np.asarray(feats["user_shop_days_since_click"]) / 7.0),
    )


def _interacted_logit(feats: dict[str, np.ndarray], click: ClickModel) -> np.ndarray:
    by_category, shop_count, shop_recency = _interacted_pieces(feats, click)
    return by_category + shop_count + shop_recency


def _simulate_clicks(
    rng: np.random.Generator,
    cfg: SynthConfig,
    imp: _Impressions,
    items: world.Items,
    background: tuple[world.EventIndex, world.EventIndex],
    terms: dict[str, np.ndarray],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Clicks day by day: each day's interacted features include the log's earlier clicks.

    Args:
        terms: click-logit terms per row; the ``"interacted"`` term is filled in here.

    Returns:
        (click bool [N], interacted feature columns).
    """
    n = len(imp.user)
    feats = {name: np.zeros(n, np.int64) for name in INTERACTED_FEATURES}
    feats["user_shop_days_since_click"] = np.zeros(n)
    click = np.zeros(n, dtype=bool)
    bounds = np.searchsorted(imp.t, np.arange(cfg.days + 1) * SECONDS_PER_DAY)
    for day in range(cfg.days):
        rows = slice(bounds[day], bounds[day + 1])
        if rows.start == rows.stop:
            continue
        history = [background]
        earlier = np.flatnonzero(click[: rows.start])
        if len(earlier):
            history.append(
                _history_indexes(
                    imp.user[earlier], imp.item[earlier], imp.t[earlier], items, cfg.days
                )
            )
        day_feats = _interacted_features(imp, rows, day, items, history)
        for name, values in day_feats.items():
            feats[name][rows] = values
        terms["interacted"][rows] = _interacted_logit(day_feats, cfg.spec.click)
        logit = cfg.spec.click.intercept + sum(term[rows] for term in terms.values())
        click[rows] = rng.random(rows.stop - rows.start) < _sigmoid(logit)
    return click, feats


def _post_click(
    rng: np.random.Generator,
    affinity: np.ndarray,
    quality: np.ndarray,
    over_budget: np.ndarray,
    m: ConversionModel,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Post-click behaviour of clicked rows and their true conversion probability."""
    n = len(affinity)
    intent = (
        m.intent_affinity * affinity
        + m.intent_quality * quality
        + m.intent_over_budget * over_budget
        + rng.normal(size=n)
    )
    base, slope, noise = m.dwell_log_seconds
    dwell = np.round(np.exp(base + slope * intent + noise * rng.normal(size=n)), 1)
    feats = {
        "dwell_time_s": np.maximum(dwell, 0.1),
        "reviews_viewed": rng.poisson(
            np.exp(m.reviews_log_rate[0] + m.reviews_log_rate[1] * intent)
        ),
        "chatted_with_seller": rng.random(n) < _sigmoid(m.chat_logit[0] + m.chat_logit[1] * intent),
        "added_to_cart": rng.random(n) < _sigmoid(m.cart_logit[0] + m.cart_logit[1] * intent),
    }
    feats = {k: v.astype(np.float64 if k == "dwell_time_s" else np.int64) for k, v in feats.items()}
    logit = (
        m.intercept
        + m.added_to_cart * feats["added_to_cart"]
        + m.chatted_with_seller * feats["chatted_with_seller"]
        + m.log_reviews * np.log1p(feats["reviews_viewed"])
        + m.log_dwell * (np.log(feats["dwell_time_s"]) - 3.0)
        + m.affinity * affinity
        + m.price_over_budget * over_budget
    )
    return feats, _sigmoid(logit)


# --------------------------------------------------------------------------- the log


def generate(
    rows: int,
    seed: int = 0,
    *,
    users: int | None = None,
    items: int | None = None,
    page_size: int = 10,
    days: int = 14,
    world: str = DEFAULT_WORLD,
) -> dict[str, pd.DataFrame]:
    """Generate the log in memory.

    Args:
        rows: impressions (all splits together).
        seed: RNG seed; same arguments give identical frames.
        users, items: population sizes (default: scaled with ``sqrt(rows)``).
        page_size: items per request (positions ``1..page_size``).
        days: days covered by the log.
        world: the data-generating world (``training.synth.worlds.WORLDS``).

    Returns:
        ``{"train", "valid", "test"}``: impression rows split 80/10/10 by request
        time, each with ids, ``ts``, every feature, ``click``, ``conversion``,
        ``p_click`` and ``p_conversion``; ``"users"`` keyed by ``user_id`` and
        ``"items"`` keyed by ``item_id`` (``tags`` is a list<int64> column).

    Raises:
        SynthConfigError: an argument is out of range.
    """
    cfg = SynthConfig(rows, seed, users, items, page_size, days, world)
    frames, _ = _generate(cfg)
    return frames


def _generate(cfg: SynthConfig) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The frames of :func:`generate` and the click-logit terms per row (diagnostics)."""
    spec, click = cfg.spec, cfg.spec.click
    rng = np.random.default_rng(cfg.seed)
    users = world.make_users(rng, cfg.n_users, spec)
    user_bias = click.user_bias_std * rng.normal(size=cfg.n_users)
    items = world.make_items(rng, cfg.n_items, spec)
    tastes = world.make_tastes(rng, users, items, spec)
    picker = world.ItemPicker(items, tastes)
    bg = world.background_history(rng, cfg.days, users, items, picker)
    if users.is_new is not None:  # a new user has no history before joining
        bg_user, _, bg_t = bg
        keep = ~users.is_new[bg_user] | (bg_t >= _join_seconds(cfg))
        bg = tuple(part[keep] for part in bg)
    background = _history_indexes(*bg, items, cfg.days)

    imp = _impressions(rng, cfg, users, items, picker)
    user, item = imp.user, imp.item
    over_budget = np.maximum(items.price_level[item] - users.purchasing_level[user], 0.0)
    terms = {
        "affinity": click.affinity * imp.affinity,
        "position": click.log_position * np.log(imp.position),
        "context": click.hour_amplitude * np.cos(2 * np.pi * (imp.hour - 21) / 24)
        + np.asarray(click.device)[imp.device],
        "user_item_bias": user_bias[user]
        + click.item_quality * items.quality[item]
        + click.price_over_budget * over_budget,
        # adds exact zeros in a world without it, so the feed world's sums are unchanged
        "taste": click.category_taste * tastes.taste[user, items.category[item]],
        "interacted": np.zeros(len(user)),
    }
    clicked_rows, interacted = _simulate_clicks(rng, cfg, imp, items, background, terms)
    p_click = _sigmoid(click.intercept + sum(terms.values()))

    clicked = np.flatnonzero(clicked_rows)
    post_clicked, p_conv_clicked = _post_click(
        rng,
        imp.affinity[clicked],
        items.quality[item[clicked]],
        over_budget[clicked],
        spec.conversion,
    )
    converted = rng.random(len(clicked)) < p_conv_clicked

    def on_clicked(values: np.ndarray) -> np.ndarray:
        # unclicked rows: 0 (the behaviour never happened, conversion impossible)
        full = np.zeros(len(user), dtype=values.dtype)
        full[clicked] = values
        return full

    log = pd.DataFrame(
        {
            "request_id": imp.request_id[imp.request],
            "ts": imp.t + LOG_START,
            "user_id": users.ids[user],
            "item_id": items.ids[item],
            "position": imp.position,
            "hour": imp.hour,
            "device": pd.array(np.asarray(DEVICES)[imp.device], dtype=str),
            **{name: users.frame[name].to_numpy()[user] for name in USER_FEATURES},
            **{name: items.frame[name].to_numpy()[item] for name in ITEM_FEATURES[:-1]},
            "tags": pd.arrays.ArrowExtensionArray(items.tags.take(pa.array(item))),
            **interacted,
            **{name: on_clicked(post_clicked[name]) for name in POST_CLICK_FEATURES},
            "click": clicked_rows.astype(np.int64),
            "conversion": on_clicked(converted.astype(np.int64)),
            "p_click": p_click,
            "p_conversion": on_clicked(p_conv_clicked),
        }
    )
    frames = dict(zip(SPLITS, _split_by_request_time(log, imp)))
    frames["users"] = users.frame
    frames["items"] = items.frame
    return frames, pd.DataFrame(terms)[LOGIT_TERMS]


def _split_by_request_time(log: pd.DataFrame, imp: _Impressions) -> list[pd.DataFrame]:
    cuts = np.cumsum(SPLIT_FRACTIONS)[:-1]
    req_bounds = [0, *(round(float(c) * imp.n_requests) for c in cuts), imp.n_requests]
    row_bounds = np.searchsorted(imp.request, req_bounds)
    return [log.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(row_bounds)]


# --------------------------------------------------------------------------- files


def _categorical(name: str, side: str, dim: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "categorical", "side": side, **extra, "dim": dim}


def _numeric(name: str, side: str, transform: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "numeric", "side": side, "transform": transform, **extra}


def schema_dict(name: str = "synthetic_feed") -> dict[str, Any]:
    """The schema of the generated log (valid for ``training.data.schema``).

    Ids take a vocabulary fitted on train; ids seen once map to the OOV row
    (``min_count: 2``), which is also what an unseen id gets at serving time.
    """
    log1p_std = "log1p_standardize"
    feats = [
        _categorical("user_id", "user", 16, min_count=2),
        *(_categorical(n, "user", 4) for n in USER_FEATURES),
        _categorical("item_id", "item", 16, min_count=2),
        _categorical("category_id", "item", 8),
        _categorical("shop_id", "item", 8, min_count=2),
        _categorical("brand_id", "item", 8, min_count=2),
        _numeric("price", "item", log1p_std),
        _categorical("price_bucket", "item", 4),
        {
            "name": "tags",
            "type": "multi_categorical",
            "side": "item",
            "max_len": MAX_TAGS,
            "dim": 8,
        },
        *(_categorical(n, "context", 4) for n in CONTEXT_FEATURES),
        _numeric("user_cat_clicks_7d", "cross", log1p_std, default=0.0),
        _numeric("user_shop_clicks_30d", "cross", log1p_std, default=0.0),
        _numeric("user_shop_days_since_click", "cross", log1p_std, default=NO_SHOP_CLICK_DAYS),
        _numeric("dwell_time_s", "cross", log1p_std, default=0.0),
        _numeric("reviews_viewed", "cross", log1p_std, default=0.0),
        _numeric("chatted_with_seller", "cross", "none", default=0.0),
        _numeric("added_to_cart", "cross", "none", default=0.0),
    ]
    return {
        "version": 1,
        "name": name,
        "ids": {"request": "request_id", "user": "user_id", "item": "item_id", "timestamp": "ts"},
        "labels": {"click": {"column": "click"}, "conversion": {"column": "conversion"}},
        "tasks": {
            # position is known only after ranking: the booster may use it, the served net not.
            # Post-click features are nonzero exactly on clicked rows: no CTR model may see them.
            "ctr": {
                "label": "click",
                "privileged": [*INTERACTED_FEATURES, "position"],
                "exclude": POST_CLICK_FEATURES,
            },
            "cvr": {
                "label": "conversion",
                "where": "click",
                "privileged": [*POST_CLICK_FEATURES, *INTERACTED_FEATURES, "position"],
            },
        },
        "features": feats,
    }


_FEATURE_GROUPS = (
    ("user", ["user_id", *USER_FEATURES]),
    ("item", ["item_id", *ITEM_FEATURES]),
    ("context (position is known only after ranking: privileged)", CONTEXT_FEATURES),
    ("user×item interacted, daily batch of the click history (privileged)", INTERACTED_FEATURES),
    (
        "post-click, 0 on unclicked rows (privileged for cvr, excluded from ctr)",
        POST_CLICK_FEATURES,
    ),
)


def schema_yaml() -> str:
    """``schema_dict()`` as commented YAML, one feature per line."""
    data = schema_dict()
    head = {k: v for k, v in data.items() if k != "features"}
    by_name = {f["name"]: f for f in data["features"]}
    lines = [
        "# Schema of the synthetic feed written by `rocketrank synth` (docs/SYNTHETIC.md).",
        yaml.safe_dump(head, sort_keys=False).rstrip(),
        "features:",
    ]
    for title, names in _FEATURE_GROUPS:
        lines.append(f"  # {title}")
        for name in names:
            flow = yaml.safe_dump(
                by_name.pop(name), default_flow_style=True, sort_keys=False, width=1000
            )
            lines.append(f"  - {flow.strip()}")
    if by_name:  # keeps the groups honest when a feature is added
        raise AssertionError(f"features without a group in schema.yaml: {sorted(by_name)}")
    return "\n".join(lines) + "\n"


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    # No pandas metadata: readers then see plain Arrow types (list<int64> tags), and a
    # pandas dtype string stored in the file cannot break a reader of another version.
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)


def _pair_mean(train: pd.DataFrame, values: np.ndarray, rows: pd.DataFrame, key: str) -> np.ndarray:
    """Train mean of ``values`` per (user_id, ``key``) pair, looked up for ``rows``;
    the global train mean for a pair train never showed."""
    if len(train) == 0:
        return np.zeros(len(rows))
    means = (
        pd.DataFrame({"user_id": train["user_id"], key: train[key], "v": values})
        .groupby(["user_id", key], sort=False)["v"]
        .mean()
    )
    index = pd.MultiIndex.from_arrays([rows["user_id"], rows[key]])
    return means.reindex(index).fillna(float(values.mean())).to_numpy()


def user_item_oracle_logit(
    train: pd.DataFrame, test: pd.DataFrame, test_terms: pd.DataFrame, click: ClickModel
) -> np.ndarray:
    """The true click logit a function of (user, item) alone can express, per test row.

    The (user, item) terms (affinity, user/item bias, taste) as they are; no
    position and no context (hour, device); each interacted term replaced by
    its train-time mean for the row's pair -- the category count per
    (user, category_id), the shop count and shop recency per (user, shop_id) --
    or by its global train mean when train never showed the pair. The
    intercept is left out (it does not change an AUC).

    Args:
        train, test: the log's train and test frames.
        test_terms: click-logit terms of the test rows (``LOGIT_TERMS`` columns).
        click: the world's click model.

    Returns:
        float64 [len(test)].
    """
    cat_train, shop_count, shop_recency = _interacted_pieces(train, click)
    by_category = _pair_mean(train, cat_train, test, "category_id")
    by_shop = _pair_mean(train, shop_count + shop_recency, test, "shop_id")
    served = test_terms[["affinity", "user_item_bias", "taste"]].sum(axis=1).to_numpy()
    return served + by_category + by_shop


def compute_stats(
    frames: dict[str, pd.DataFrame], cfg: SynthConfig, logit_terms: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Summary of a generated log: sizes, rates and the oracle (true-probability) AUCs.

    Args:
        frames: the output of :func:`generate`.
        cfg: the config that produced it.
        logit_terms: click-logit terms per row of the whole log (train, valid,
            test in order); adds their spread and the no-position oracle.
    """
    log = pd.concat([frames[s] for s in SPLITS], ignore_index=True)
    test = frames["test"]
    clicks = int(log["click"].sum())
    conversions = int(log["conversion"].sum())
    clicked_test = test[test["click"] == 1]
    y_test = test["click"].to_numpy()

    def _num(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 6)

    stats: dict[str, Any] = {
        "world": cfg.world,
        "world_params": cfg.spec.params(),
        "rows": len(log),
        "seed": cfg.seed,
        "requests": int(log["request_id"].nunique()),
        "page_size": cfg.page_size,
        "days": cfg.days,
        "users": len(frames["users"]),
        "items": len(frames["items"]),
        "users_in_log": int(log["user_id"].nunique()),
        "items_in_log": int(log["item_id"].nunique()),
        "clicks": clicks,
        "conversions": conversions,
        "ctr": _num(clicks / len(log)),
        "cvr": _num(conversions / clicks) if clicks else None,
        "mean_p_click": _num(log["p_click"].mean()),
        "oracle_auc_click": _num(auc(y_test, test["p_click"].to_numpy())),
        "oracle_auc_conversion": _num(
            auc(clicked_test["conversion"].to_numpy(), clicked_test["p_conversion"].to_numpy())
        ),
    }
    train_users = frames["train"]["user_id"].unique()
    unseen = ~test["user_id"].isin(train_users)
    stats["test_rows_user_unseen_in_train"] = _num(unseen.mean()) if len(test) else None
    stats["test_users_unseen_in_train"] = (
        _num(test.loc[unseen, "user_id"].nunique() / test["user_id"].nunique())
        if len(test)
        else None
    )
    if logit_terms is not None:
        test_terms = logit_terms.iloc[len(log) - len(test) :]
        # the ceiling of a model that cannot see the position (e.g. the served light net)
        no_position = test_terms.drop(columns="position").sum(axis=1).to_numpy()
        stats["oracle_auc_click_no_position"] = _num(auc(y_test, no_position))
        # position enters the logit additively, so fixing it at the reference shifts every
        # logit by one constant: the same ranking as without it
        debiased = no_position + cfg.spec.click.log_position * math.log(REFERENCE_POSITION)
        stats["oracle_auc_click_debiased"] = _num(auc(y_test, debiased))
        stats["oracle_reference_position"] = REFERENCE_POSITION
        user_item = user_item_oracle_logit(frames["train"], test, test_terms, cfg.spec.click)
        stats["oracle_auc_click_user_item"] = _num(auc(y_test, user_item))
        stats["click_logit_std"] = {k: round(float(logit_terms[k].std()), 4) for k in LOGIT_TERMS}
    by_position = log.groupby("position")["click"].mean()
    stats["ctr_by_position"] = {int(k): round(float(v), 5) for k, v in by_position.items()}
    stats["splits"] = {s: len(frames[s]) for s in SPLITS}
    stats["clicks_per_split"] = {s: int(frames[s]["click"].sum()) for s in SPLITS}
    stats["row_group_rows"] = ROW_GROUP_ROWS
    return stats


def write(
    out_dir: str | Path,
    rows: int,
    seed: int = 0,
    *,
    users: int | None = None,
    items: int | None = None,
    page_size: int = 10,
    days: int = 14,
    world: str = DEFAULT_WORLD,
) -> dict[str, Any]:
    """Generate the log and write it to ``out_dir``.

    Arguments as for :func:`generate`.

    Writes ``train/valid/test.parquet`` (row groups of ``ROW_GROUP_ROWS``),
    ``users.parquet``, ``items.parquet``, ``schema.yaml`` and ``stats.json``.

    Returns:
        The content of ``stats.json``.

    Raises:
        SynthConfigError: an argument is out of range, or ``out_dir`` is a file.
    """
    started = time.perf_counter()
    cfg = SynthConfig(rows, seed, users, items, page_size, days, world)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SynthConfigError(f"out_dir {str(out)!r} exists and is not a directory")
    frames, parts = _generate(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SPLITS, "users", "items"):
        _write_parquet(frames[name], out / f"{name}.parquet")
    schema_path = out / "schema.yaml"
    schema_path.write_text(schema_yaml())
    schema: Schema = load_schema(schema_path)  # fail here, not in the trainer
    missing = sorted(set(schema.required_columns()) - set(frames["train"].columns))
    if missing:
        raise AssertionError(f"generated log lacks schema columns {missing}")
    stats = compute_stats(frames, cfg, parts)
    stats["seconds"] = round(time.perf_counter() - started, 2)
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


__all__ = [
    "CLICK",
    "CONVERSION",
    "REFERENCE_POSITION",
    "ROW_GROUP_ROWS",
    "SPLITS",
    "WORLDS",
    "SynthConfig",
    "SynthConfigError",
    "compute_stats",
    "generate",
    "schema_dict",
    "user_item_oracle_logit",
    "write",
]
