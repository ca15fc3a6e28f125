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

Everything is vectorised numpy; the only Python loop runs over days (the
daily feature job), and the output is a deterministic function of the
arguments.

Usage::

    frames = generate(rows=200_000, seed=1)       # dict of DataFrames
    stats = write("data/", rows=200_000, seed=1)  # Parquet + schema.yaml + stats.json
"""

from __future__ import annotations

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

ROW_GROUP_ROWS = 65_536
"""Parquet row-group size; the data layer streams one row group per chunk."""

SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # of requests, in request-time order

LOG_START = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
"""Unix seconds of the first day of the log (``ts`` is int64 Unix seconds)."""

SECONDS_PER_DAY = 86_400
HISTORY_DAYS = 30  # simulated background history before the log starts
NO_SHOP_CLICK_DAYS = 90.0  # user_shop_days_since_click when the user never clicked the shop
LATENT_DIM = 16
MAX_CATEGORIES = 40
TAGS_PER_CATEGORY = 12
GLOBAL_TAGS = 20
MAX_TAGS = 5
FAVOURITE_SHOPS = 3
DEVICES = ("android", "ios", "web")
GENDERS = ("female", "male", "unknown")
PRICE_LEVELS = 10  # price_bucket: price decile within the item's category

# Which channel fills a page slot (the retrieval mix of the simulated feed).
SLOT_FROM_INTEREST = 0.55  # a category drawn from the user's interests
SLOT_FROM_FAVOURITE_SHOP = 0.10  # one of the user's favourite shops
# the rest: globally popular items

# Background clicks per day by activity level (the log is a sample of traffic;
# these clicks feed the interacted features but are not rows of the log).
BACKGROUND_CLICKS_PER_DAY = (0.15, 0.4, 1.0, 2.5)
ACTIVITY_SHARE = (0.45, 0.30, 0.18, 0.07)
REQUEST_WEIGHT = (1.0, 3.0, 8.0, 20.0)  # how often each activity level opens the feed


@dataclass(frozen=True)
class LatentModel:
    """How the latent vectors are composed (variance shares, each component unit variance)."""

    user_from_features: float = 0.5  # age, gender, city tier, purchasing power
    item_category: float = 0.35
    item_shop: float = 0.15
    item_brand: float = 0.10
    item_tags: float = 0.10  # the rest of the item vector is idiosyncratic
    interest_affinity: float = 1.5  # user×category interest: affinity to the category ...
    interest_taste: float = 1.0  # ... plus a taste the latent vectors do not know


@dataclass(frozen=True)
class ClickModel:
    """The true click logit, term by term (see docs/SYNTHETIC.md)."""

    intercept: float = -3.7
    affinity: float = 0.8  # × user·item latent affinity (unit variance)
    log_position: float = -0.6  # × ln(position)
    user_bias_std: float = 0.3
    item_quality: float = 0.35  # × item quality (unit variance)
    price_over_budget: float = -0.6  # × max(0, price level − purchasing level), both in [0, 1]
    cat_clicks_7d: float = 0.30  # × ln(1 + user_cat_clicks_7d)
    shop_clicks_30d: float = 0.30  # × ln(1 + user_shop_clicks_30d)
    shop_recency: float = 0.30  # × exp(−user_shop_days_since_click / 7)
    hour_amplitude: float = 0.15  # × cos(2π (hour − 21) / 24): evenings click more
    device: tuple[float, ...] = (0.0, 0.10, -0.25)  # android, ios, web
    previous_ranker_noise: float = 2.0  # page order = affinity + quality + this × N(0, 1)


@dataclass(frozen=True)
class ConversionModel:
    """Post-click behaviour from a purchase intent, and the true conversion logit."""

    intent_affinity: float = 0.5
    intent_quality: float = 0.4
    intent_over_budget: float = -1.5
    intercept: float = -5.0
    added_to_cart: float = 1.8
    chatted_with_seller: float = 0.8
    log_reviews: float = 0.5  # × ln(1 + reviews_viewed)
    log_dwell: float = 0.7  # × (ln(dwell seconds) − 3)
    affinity: float = 0.3
    price_over_budget: float = -1.0


LATENT = LatentModel()
CLICK = ClickModel()
CONVERSION = ConversionModel()

USER_FEATURES = ["age_bucket", "gender", "city_tier", "activity_level", "purchasing_power"]
ITEM_FEATURES = ["category_id", "shop_id", "brand_id", "price", "price_bucket", "tags"]
CONTEXT_FEATURES = ["position", "hour", "device"]
INTERACTED_FEATURES = ["user_cat_clicks_7d", "user_shop_clicks_30d", "user_shop_days_since_click"]
POST_CLICK_FEATURES = ["dwell_time_s", "reviews_viewed", "chatted_with_seller", "added_to_cart"]


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
    """

    rows: int
    seed: int = 0
    users: int | None = None
    items: int | None = None
    page_size: int = 10
    days: int = 14

    def __post_init__(self) -> None:
        checks = [
            ("rows", self.rows, 10 * self.page_size if self.page_size > 0 else 1),
            ("page_size", self.page_size, 1),
            ("days", self.days, 3),
        ]
        if self.users is not None:
            checks.append(("users", self.users, 10))
        if self.items is not None:
            checks.append(("items", self.items, 20))
        for name, value, low in checks:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SynthConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.days > 365:
            raise SynthConfigError(f"days must be <= 365, got {self.days}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SynthConfigError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def n_users(self) -> int:
        return self.users or max(50, round(20_000 * math.sqrt(self.rows / 200_000)))

    @property
    def n_items(self) -> int:
        return self.items or max(50, round(10_000 * math.sqrt(self.rows / 200_000)))


# --------------------------------------------------------------------------- helpers


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """``n`` distinct random int64 ids in ``[low, high)``, in random order."""
    ids = np.unique(rng.integers(low, high, size=n + n // 10 + 16, dtype=np.int64))
    while len(ids) < n:  # only when the range is nearly exhausted
        more = rng.integers(low, high, size=n, dtype=np.int64)
        ids = np.unique(np.concatenate([ids, more]))
    return rng.permutation(ids)[:n]


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)


class _GroupSampler:
    """Draws a member of a group with probability proportional to its weight.

    One ``searchsorted`` for a whole batch of draws: members are laid out by
    group on ``[g, g + 1)`` by their within-group cumulative weight.
    """

    def __init__(self, groups: np.ndarray, weights: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(groups, kind="stable")
        g = groups[self.order]
        w = weights[self.order].astype(np.float64)
        total = np.bincount(g, w, minlength=n_groups)
        cum = np.cumsum(w)
        before = np.concatenate([[0.0], np.cumsum(total)])[:-1]
        within = (cum - before[g]) / np.where(total[g] > 0, total[g], 1.0)
        last = np.ones(len(g), dtype=bool)
        last[:-1] = g[1:] != g[:-1]
        within[last] = 1.0  # no rounding gap at the end of a group
        self.keys = g + within
        self.nonempty = total > 0

    def draw(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Members (indices into the constructor's arrays) for each group in ``groups``."""
        r = rng.random(len(groups))
        pos = np.searchsorted(self.keys, groups + r, side="right")
        return self.order[np.minimum(pos, len(self.order) - 1)]


class _EventIndex:
    """Click events sorted by (key, time): window counts and last-event lookups.

    Times are seconds relative to ``LOG_START`` (negative = before the log).
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray, days: int) -> None:
        self.offset = HISTORY_DAYS * SECONDS_PER_DAY
        self.shift = int((self.offset + days * SECONDS_PER_DAY + 1)).bit_length()
        self.mask = (1 << self.shift) - 1
        self.sorted = np.sort(self._pack(keys, times))

    def _pack(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        t = np.asarray(times, dtype=np.int64) + self.offset
        return (np.asarray(keys, dtype=np.int64) << self.shift) | t

    def count(self, keys: np.ndarray, start: int, end: int) -> np.ndarray:
        """Events of each key with ``start <= time < end``."""
        lo = np.searchsorted(self.sorted, self._pack(keys, np.full(len(keys), start)))
        hi = np.searchsorted(self.sorted, self._pack(keys, np.full(len(keys), end)))
        return hi - lo

    def last_before(self, keys: np.ndarray, end: int) -> np.ndarray:
        """Time of each key's last event before ``end``; ``-inf`` when there is none."""
        idx = np.searchsorted(self.sorted, self._pack(keys, np.full(len(keys), end))) - 1
        packed = self.sorted[np.maximum(idx, 0)] if len(self.sorted) else np.zeros(len(keys), int)
        found = (idx >= 0) & ((packed >> self.shift) == keys)
        t = (packed & self.mask) - self.offset
        return np.where(found, t.astype(np.float64), -np.inf)


def _affinity(u: np.ndarray, v: np.ndarray, ui: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Standardised latent affinity ``u·v / sqrt(d)`` for index pairs, in blocks."""
    out = np.empty(len(ui), dtype=np.float64)
    block = 1 << 18
    for s in range(0, len(ui), block):
        e = s + block
        out[s:e] = np.einsum("ij,ij->i", u[ui[s:e]], v[vi[s:e]], dtype=np.float64)
    return out / math.sqrt(u.shape[1])


# --------------------------------------------------------------------------- the world


@dataclass
class _Users:
    ids: np.ndarray  # int64 [U]
    frame: pd.DataFrame  # user_id + USER_FEATURES
    latent: np.ndarray  # float32 [U, d]
    bias: np.ndarray  # float64 [U]
    purchasing_level: np.ndarray  # float64 [U] in [0, 1]
    clicks_per_day: np.ndarray  # float64 [U] background click rate
    request_weight: np.ndarray  # float64 [U]
    device: np.ndarray  # int64 [U] preferred device


@dataclass
class _Items:
    ids: np.ndarray  # int64 [I]
    frame: pd.DataFrame  # item_id + ITEM_FEATURES
    tags: pa.ListArray  # list<int64> [I]
    latent: np.ndarray  # float32 [I, d]
    category: np.ndarray  # int64 [I] category index
    shop: np.ndarray  # int64 [I] shop index
    quality: np.ndarray  # float64 [I], unit variance
    price_level: np.ndarray  # float64 [I] in [0, 1]
    popularity: np.ndarray  # float64 [I]
    category_latent: np.ndarray  # float32 [C, d]
    shop_latent: np.ndarray  # float32 [S, d]
    n_categories: int
    n_shops: int


def _make_users(rng: np.random.Generator, n: int) -> _Users:
    d = LATENT_DIM
    age = rng.choice(7, size=n, p=[0.08, 0.22, 0.26, 0.2, 0.12, 0.08, 0.04])
    gender = rng.choice(3, size=n, p=[0.52, 0.40, 0.08])
    tier = rng.choice(5, size=n, p=[0.1, 0.2, 0.3, 0.25, 0.15])  # 0 = tier-1 city
    # purchasing power: richer in big cities and in the middle age buckets
    wealth = rng.normal(size=n) - 0.35 * (tier - 2) - 0.08 * (age - 3) ** 2
    power = np.searchsorted(np.quantile(wealth, [0.2, 0.4, 0.6, 0.8]), wealth)  # 0..4
    activity = rng.choice(4, size=n, p=ACTIVITY_SHARE)

    tables = [rng.normal(size=(k, d)) for k in (7, 3, 5, 5)]
    from_features = (
        tables[0][age] + tables[1][gender] + tables[2][tier] + tables[3][power]
    ) / 2.0  # four unit-variance parts
    idiosyncratic = rng.normal(size=(n, d))
    w = LATENT.user_from_features
    latent = (math.sqrt(w) * from_features + math.sqrt(1 - w) * idiosyncratic).astype(np.float32)

    jitter = rng.lognormal(0.0, 0.3, size=n)
    clicks_per_day = np.asarray(BACKGROUND_CLICKS_PER_DAY)[activity] * jitter
    request_weight = np.asarray(REQUEST_WEIGHT)[activity] * rng.lognormal(0.0, 0.5, size=n)
    device = rng.choice(len(DEVICES), size=n, p=[0.55, 0.35, 0.10])
    ids = _unique_ids(rng, n, 10**9, 10**12)
    frame = pd.DataFrame(
        {
            "user_id": ids,
            "age_bucket": age.astype(np.int64),
            "gender": np.asarray(GENDERS, dtype=object)[gender],
            "city_tier": (tier + 1).astype(np.int64),
            "activity_level": activity.astype(np.int64),
            "purchasing_power": (power + 1).astype(np.int64),
        }
    )
    frame["gender"] = frame["gender"].astype(str)
    return _Users(
        ids=ids,
        frame=frame,
        latent=latent,
        bias=CLICK.user_bias_std * rng.normal(size=n),
        purchasing_level=power / 4.0,
        clicks_per_day=clicks_per_day,
        request_weight=request_weight,
        device=device,
    )


def _make_items(rng: np.random.Generator, n: int) -> _Items:
    d = LATENT_DIM
    n_cat = min(MAX_CATEGORIES, max(4, n // 20))
    n_shops = max(n_cat, n // 8)
    n_brands = max(n_cat, n // 15)

    # every category has at least one shop and one brand
    shop_cat = np.concatenate([np.arange(n_cat), rng.integers(0, n_cat, n_shops - n_cat)])
    brand_cat = np.concatenate([np.arange(n_cat), rng.integers(0, n_cat, n_brands - n_cat)])
    shop_size = rng.lognormal(0.0, 1.0, size=n_shops)
    shop = rng.choice(n_shops, size=n, p=shop_size / shop_size.sum())
    category = np.where(rng.random(n) < 0.85, shop_cat[shop], rng.integers(0, n_cat, n))
    brand = _GroupSampler(brand_cat, np.ones(n_brands), n_cat).draw(category, rng)

    cat_latent = rng.normal(size=(n_cat, d))
    shop_latent = rng.normal(size=(n_shops, d))
    brand_latent = rng.normal(size=(n_brands, d))
    tag_latent = rng.normal(size=(n_cat * TAGS_PER_CATEGORY + GLOBAL_TAGS, d))

    # tags: 1..MAX_TAGS distinct tags from the category's pool, sometimes one global tag
    n_tags = 1 + rng.binomial(MAX_TAGS - 1, 0.5, size=n)
    pick = np.argsort(rng.random((n, TAGS_PER_CATEGORY)), axis=1)[:, :MAX_TAGS]
    tag_index = category[:, None] * TAGS_PER_CATEGORY + pick
    has_global = rng.random(n) < 0.3
    global_tag = n_cat * TAGS_PER_CATEGORY + rng.integers(0, GLOBAL_TAGS, n)
    tag_index[np.arange(n), n_tags - 1] = np.where(
        has_global, global_tag, tag_index[np.arange(n), n_tags - 1]
    )
    in_bag = np.arange(MAX_TAGS)[None, :] < n_tags[:, None]
    tag_sum = np.where(in_bag[:, :, None], tag_latent[tag_index], 0.0).sum(axis=1)
    tag_part = tag_sum / np.sqrt(n_tags)[:, None]  # unit variance again
    tag_ids = _unique_ids(rng, len(tag_latent), 100_000, 1_000_000)
    tags = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(n_tags)]).astype(np.int32)),
        pa.array(tag_ids[tag_index[in_bag]], type=pa.int64()),
    )

    parts = (
        (LATENT.item_category, cat_latent[category]),
        (LATENT.item_shop, shop_latent[shop]),
        (LATENT.item_brand, brand_latent[brand]),
        (LATENT.item_tags, tag_part),
    )
    rest = 1.0 - sum(w for w, _ in parts)
    latent = math.sqrt(rest) * rng.normal(size=(n, d))
    for w, part in parts:
        latent += math.sqrt(w) * part

    popularity = rng.lognormal(0.0, 1.3, size=n) * shop_size[shop] ** 0.3
    shop_quality = rng.normal(size=n_shops)
    quality = _standardise(
        rng.normal(size=n) + 0.5 * shop_quality[shop] + 0.4 * _standardise(np.log(popularity))
    )

    cat_price = np.exp(rng.normal(math.log(80.0), 0.9, size=n_cat))
    brand_premium = rng.lognormal(0.0, 0.3, size=n_brands)
    raw_price = cat_price[category] * brand_premium[brand] * rng.lognormal(0.0, 0.5, size=n)
    price = np.maximum(np.round(raw_price) - 0.01, 0.99)
    # price decile inside the category
    order = np.lexsort((price, category))
    counts = np.bincount(category, minlength=n_cat)
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[category[order]]
    pct = rank / np.maximum(counts[category] - 1, 1)
    price_bucket = np.minimum((pct * PRICE_LEVELS).astype(np.int64), PRICE_LEVELS - 1)

    ids = _unique_ids(rng, n, 10**10, 10**12)
    cat_ids = _unique_ids(rng, n_cat, 10**7, 10**8)
    shop_ids = _unique_ids(rng, n_shops, 10**8, 10**11)
    brand_ids = _unique_ids(rng, n_brands, 10**6, 10**10)
    frame = pd.DataFrame(
        {
            "item_id": ids,
            "category_id": cat_ids[category],
            "shop_id": shop_ids[shop],
            "brand_id": brand_ids[brand],
            "price": price,
            "price_bucket": price_bucket,
            "tags": pd.arrays.ArrowExtensionArray(tags),
        }
    )
    return _Items(
        ids=ids,
        frame=frame,
        tags=tags,
        latent=latent.astype(np.float32),
        category=category,
        shop=shop,
        quality=quality,
        price_level=price_bucket / (PRICE_LEVELS - 1),
        popularity=popularity,
        category_latent=cat_latent.astype(np.float32),
        shop_latent=shop_latent.astype(np.float32),
        n_categories=n_cat,
        n_shops=n_shops,
    )


@dataclass
class _Tastes:
    """What a user tends to look at: category interests and favourite shops."""

    category: _GroupSampler  # groups = users, members = user * C + category
    favourite_shops: np.ndarray  # int64 [U, FAVOURITE_SHOPS]


def _make_tastes(rng: np.random.Generator, users: _Users, items: _Items) -> _Tastes:
    n_users, n_cat = len(users.ids), items.n_categories
    cat_traffic = np.bincount(items.category, items.popularity, minlength=n_cat)
    cat_affinity = (users.latent @ items.category_latent.T) / math.sqrt(LATENT_DIM)
    logits = (
        LATENT.interest_affinity * cat_affinity
        + LATENT.interest_taste * rng.normal(size=(n_users, n_cat))
        + np.log(cat_traffic / cat_traffic.sum())[None, :]
    )
    share = np.exp(logits - logits.max(axis=1, keepdims=True))
    groups = np.repeat(np.arange(n_users), n_cat)
    category = _GroupSampler(groups, share.ravel(), n_users)

    # favourite shops: among popular shops, the ones the user likes best
    shop_traffic = np.bincount(items.shop, items.popularity, minlength=items.n_shops)
    candidates = rng.choice(
        items.n_shops, size=(n_users, 4 * FAVOURITE_SHOPS), p=shop_traffic / shop_traffic.sum()
    )
    like = np.einsum("ud,ukd->uk", users.latent, items.shop_latent[candidates]) / math.sqrt(
        LATENT_DIM
    ) + rng.gumbel(size=candidates.shape)
    best = np.argsort(-like, axis=1)[:, :FAVOURITE_SHOPS]
    return _Tastes(category=category, favourite_shops=np.take_along_axis(candidates, best, 1))


class _ItemPicker:
    """Retrieval channels of the simulated feed (and of the background history)."""

    def __init__(self, users: _Users, items: _Items, tastes: _Tastes) -> None:
        self.items, self.tastes = items, tastes
        self.n_cat = items.n_categories
        self.by_category = _GroupSampler(items.category, items.popularity, self.n_cat)
        self.by_shop = _GroupSampler(items.shop, items.popularity, items.n_shops)
        self.popular = _GroupSampler(np.zeros(len(items.ids), np.int64), items.popularity, 1)

    def from_interest(self, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cat = self.tastes.category.draw(user, rng) - user * self.n_cat
        return self.by_category.draw(cat, rng)

    def from_favourite_shop(self, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        slot = rng.integers(0, FAVOURITE_SHOPS, len(user))
        return self.by_shop.draw(self.tastes.favourite_shops[user, slot], rng)

    def from_popular(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.popular.draw(np.zeros(n, np.int64), rng)

    def mixed(self, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per entry of ``user`` from the channel mix of the feed."""
        channel = rng.random(len(user))
        item = self.from_popular(len(user), rng)
        interest = channel < SLOT_FROM_INTEREST
        item[interest] = self.from_interest(user[interest], rng)
        fav = (channel >= SLOT_FROM_INTEREST) & (
            channel < SLOT_FROM_INTEREST + SLOT_FROM_FAVOURITE_SHOP
        )
        item[fav] = self.from_favourite_shop(user[fav], rng)
        return item


# --------------------------------------------------------------------------- history


def _background_history(
    rng: np.random.Generator, cfg: SynthConfig, users: _Users, items: _Items, picker: _ItemPicker
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clicks of traffic the log does not show: (user, item, time) over history + log days.

    The user clicks, among a few retrieved items, the one with the best affinity
    (Gumbel noise), so the history follows affinity without revealing it exactly.
    """
    span = HISTORY_DAYS + cfg.days
    n_events = rng.poisson(users.clicks_per_day * span)
    user = np.repeat(np.arange(len(users.ids)), n_events)
    times = rng.integers(-HISTORY_DAYS * SECONDS_PER_DAY, cfg.days * SECONDS_PER_DAY, len(user))
    candidates = np.stack([picker.mixed(user, rng) for _ in range(4)], axis=1)
    score = np.stack(
        [_affinity(users.latent, items.latent, user, candidates[:, k]) for k in range(4)], axis=1
    ) + rng.gumbel(size=candidates.shape)
    item = candidates[np.arange(len(user)), np.argmax(score, axis=1)]
    return user, item, times


# --------------------------------------------------------------------------- the log


def _make_requests(
    rng: np.random.Generator, cfg: SynthConfig, users: _Users
) -> dict[str, np.ndarray]:
    n_req = -(-cfg.rows // cfg.page_size)
    user = rng.choice(
        len(users.ids), size=n_req, p=users.request_weight / users.request_weight.sum()
    )
    hours = np.arange(24)
    hour_weight = 1.0 + 0.8 * np.cos(2 * np.pi * (hours - 21) / 24)
    hour = rng.choice(24, size=n_req, p=hour_weight / hour_weight.sum())
    day = rng.integers(0, cfg.days, n_req)
    t = day * SECONDS_PER_DAY + hour * 3600 + rng.integers(0, 3600, n_req)
    device = np.where(
        rng.random(n_req) < 0.85, users.device[user], rng.integers(0, len(DEVICES), n_req)
    )
    order = np.argsort(t, kind="stable")
    return {
        "request_id": _unique_ids(rng, n_req, 10**11, 10**12),
        "user": user[order],
        "t": t[order],
        "hour": hour[order],
        "device": device[order],
    }


def _fill_pages(
    rng: np.random.Generator, req_user: np.ndarray, page: int, picker: _ItemPicker
) -> np.ndarray:
    """Items shown per request, int64 [R, page], without repeats inside a page."""
    user = np.repeat(req_user, page)
    shown = picker.mixed(user, rng).reshape(-1, page)
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


def _interacted_features(
    user: np.ndarray,
    item: np.ndarray,
    t: np.ndarray,
    day: int,
    items: _Items,
    history: list[_EventIndex],
) -> dict[str, np.ndarray]:
    """Daily-batch interacted features as of the end of ``day - 1``.

    ``history`` holds [category index, shop index] pairs of event indexes whose
    counts are summed (background traffic and the log's own clicks).
    """
    cutoff = day * SECONDS_PER_DAY
    cat_key = user * items.n_categories + items.category[item]
    shop_key = user * items.n_shops + items.shop[item]
    cat7 = np.zeros(len(user), np.int64)
    shop30 = np.zeros(len(user), np.int64)
    last = np.full(len(user), -np.inf)
    for by_cat, by_shop in zip(history[0::2], history[1::2]):
        cat7 += by_cat.count(cat_key, cutoff - 7 * SECONDS_PER_DAY, cutoff)
        shop30 += by_shop.count(shop_key, cutoff - 30 * SECONDS_PER_DAY, cutoff)
        last = np.maximum(last, by_shop.last_before(shop_key, cutoff))
    days_since = np.where(np.isfinite(last), (t - last) / SECONDS_PER_DAY, NO_SHOP_CLICK_DAYS)
    return {
        "user_cat_clicks_7d": cat7,
        "user_shop_clicks_30d": shop30,
        "user_shop_days_since_click": np.round(np.minimum(days_since, NO_SHOP_CLICK_DAYS), 3),
    }


def _post_click(
    rng: np.random.Generator, affinity: np.ndarray, quality: np.ndarray, over_budget: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Post-click behaviour of clicked rows and their true conversion probability."""
    m = CONVERSION
    n = len(affinity)
    intent = (
        m.intent_affinity * affinity
        + m.intent_quality * quality
        + m.intent_over_budget * over_budget
        + rng.normal(size=n)
    )
    log_dwell = 3.0 + 0.45 * intent + 0.6 * rng.normal(size=n)
    feats = {
        "dwell_time_s": np.round(np.exp(log_dwell), 1),
        "reviews_viewed": rng.poisson(np.exp(-0.3 + 0.55 * intent)).astype(np.int64),
        "chatted_with_seller": (rng.random(n) < _sigmoid(-2.6 + 0.7 * intent)).astype(np.int64),
        "added_to_cart": (rng.random(n) < _sigmoid(-1.6 + 1.1 * intent)).astype(np.int64),
    }
    logit = (
        m.intercept
        + m.added_to_cart * feats["added_to_cart"]
        + m.chatted_with_seller * feats["chatted_with_seller"]
        + m.log_reviews * np.log1p(feats["reviews_viewed"])
        + m.log_dwell * (np.log(np.maximum(feats["dwell_time_s"], 0.1)) - 3.0)
        + m.affinity * affinity
        + m.price_over_budget * over_budget
    )
    return feats, _sigmoid(logit)


def generate(
    rows: int,
    seed: int = 0,
    *,
    users: int | None = None,
    items: int | None = None,
    page_size: int = 10,
    days: int = 14,
) -> dict[str, pd.DataFrame]:
    """Generate the log in memory.

    Args:
        rows: impressions (all splits together).
        seed: RNG seed; same arguments give identical frames.
        users, items: population sizes (default: scaled with ``sqrt(rows)``).
        page_size: items per request (positions ``1..page_size``).
        days: days covered by the log.

    Returns:
        ``{"train", "valid", "test"}``: impression rows split 80/10/10 by request
        time, each with ids, ``ts``, every feature, ``click``, ``conversion``,
        ``p_click`` and ``p_conversion``; ``"users"`` keyed by ``user_id`` and
        ``"items"`` keyed by ``item_id`` (``tags`` is a list<int64> column).

    Raises:
        SynthConfigError: an argument is out of range.
    """
    cfg = SynthConfig(rows, seed, users, items, page_size, days)
    frames, _ = _generate(cfg)
    return frames


def _generate(cfg: SynthConfig) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The frames of :func:`generate` and the click-logit terms per row (diagnostics)."""
    rng = np.random.default_rng(cfg.seed)
    users = _make_users(rng, cfg.n_users)
    items = _make_items(rng, cfg.n_items)
    tastes = _make_tastes(rng, users, items)
    picker = _ItemPicker(users, items, tastes)
    bg_user, bg_item, bg_t = _background_history(rng, cfg, users, items, picker)
    history = [
        _EventIndex(bg_user * items.n_categories + items.category[bg_item], bg_t, cfg.days),
        _EventIndex(bg_user * items.n_shops + items.shop[bg_item], bg_t, cfg.days),
    ]

    req = _make_requests(rng, cfg, users)
    P = cfg.page_size
    shown = _fill_pages(rng, req["user"], P, picker)
    # the previous ranker put what it believed best on top
    n_req = len(req["user"])
    flat_user = np.repeat(req["user"], P)
    affinity = _affinity(users.latent, items.latent, flat_user, shown.ravel())
    belief = (
        affinity
        + CLICK.item_quality * items.quality[shown.ravel()]
        + CLICK.previous_ranker_noise * rng.normal(size=n_req * P)
    )
    order = np.argsort(-belief.reshape(n_req, P), axis=1, kind="stable")
    shown = np.take_along_axis(shown, order, axis=1)
    affinity = np.take_along_axis(affinity.reshape(n_req, P), order, axis=1)

    n = cfg.rows
    r_of = np.repeat(np.arange(n_req), P)[:n]
    user = flat_user[:n]
    item = shown.ravel()[:n]
    affinity = affinity.ravel()[:n]
    position = np.tile(np.arange(1, P + 1), n_req)[:n]
    t = req["t"][r_of]
    hour, device = req["hour"][r_of], req["device"][r_of]
    over_budget = np.maximum(items.price_level[item] - users.purchasing_level[user], 0.0)

    m = CLICK
    parts = {
        "affinity": m.affinity * affinity,
        "position": m.log_position * np.log(position),
        "context": m.hour_amplitude * np.cos(2 * np.pi * (hour - 21) / 24)
        + np.asarray(m.device)[device],
        "user_item_bias": users.bias[user]
        + m.item_quality * items.quality[item]
        + m.price_over_budget * over_budget,
        "interacted": np.zeros(n),
    }
    inter = {k: np.zeros(n, np.int64) for k in INTERACTED_FEATURES[:2]}
    inter["user_shop_days_since_click"] = np.zeros(n)
    click = np.zeros(n, dtype=bool)
    day_bounds = np.searchsorted(t, np.arange(cfg.days + 1) * SECONDS_PER_DAY)
    log_user, log_item, log_t = [], [], []
    for day in range(cfg.days):
        lo, hi = day_bounds[day], day_bounds[day + 1]
        if lo == hi:
            continue
        if log_user:
            lu, li, lt = (np.concatenate(a) for a in (log_user, log_item, log_t))
            day_history = [
                *history,
                _EventIndex(lu * items.n_categories + items.category[li], lt, cfg.days),
                _EventIndex(lu * items.n_shops + items.shop[li], lt, cfg.days),
            ]
        else:
            day_history = history
        feats = _interacted_features(user[lo:hi], item[lo:hi], t[lo:hi], day, items, day_history)
        for k, v in feats.items():
            inter[k][lo:hi] = v
        parts["interacted"][lo:hi] = (
            m.cat_clicks_7d * np.log1p(feats["user_cat_clicks_7d"])
            + m.shop_clicks_30d * np.log1p(feats["user_shop_clicks_30d"])
            + m.shop_recency * np.exp(-feats["user_shop_days_since_click"] / 7.0)
        )
        logit = m.intercept + sum(p[lo:hi] for p in parts.values())
        click[lo:hi] = rng.random(hi - lo) < _sigmoid(logit)
        hit = np.flatnonzero(click[lo:hi]) + lo
        log_user.append(user[hit])
        log_item.append(item[hit])
        log_t.append(t[hit])
    p_click = _sigmoid(m.intercept + sum(parts.values()))

    clicked = np.flatnonzero(click)
    post_values, p_conv_clicked = _post_click(
        rng, affinity[clicked], items.quality[item[clicked]], over_budget[clicked]
    )
    post = {}
    for k, v in post_values.items():
        full = np.zeros(n, dtype=v.dtype)  # unclicked rows: 0 (the behaviour never happened)
        full[clicked] = v
        post[k] = full
    p_conversion = np.zeros(n)
    p_conversion[clicked] = p_conv_clicked
    conversion = np.zeros(n, dtype=np.int64)
    conversion[clicked] = rng.random(len(clicked)) < p_conv_clicked

    log = pd.DataFrame(
        {
            "request_id": req["request_id"][r_of],
            "ts": (t + LOG_START).astype(np.int64),
            "user_id": users.ids[user],
            "item_id": items.ids[item],
            "position": position.astype(np.int64),
            "hour": hour.astype(np.int64),
            "device": np.asarray(DEVICES, dtype=object)[device],
        }
    )
    log["device"] = log["device"].astype(str)
    for name in USER_FEATURES:
        log[name] = users.frame[name].to_numpy()[user]
    for name in ITEM_FEATURES:
        if name == "tags":
            log[name] = pd.arrays.ArrowExtensionArray(items.tags.take(pa.array(item)))
        else:
            log[name] = items.frame[name].to_numpy()[item]
    for name in INTERACTED_FEATURES:
        log[name] = inter[name]
    for name in POST_CLICK_FEATURES:
        log[name] = post[name]
    log["click"] = click.astype(np.int64)
    log["conversion"] = conversion
    log["p_click"] = p_click
    log["p_conversion"] = p_conversion

    out = dict(zip(SPLITS, _split_by_request_time(log, n_req, P)))
    out["users"] = users.frame
    out["items"] = items.frame
    return out, pd.DataFrame(parts)


def _split_by_request_time(log: pd.DataFrame, n_req: int, page: int) -> list[pd.DataFrame]:
    cuts = np.cumsum(SPLIT_FRACTIONS)[:-1]
    req_bounds = [0, *(int(round(c * n_req)) for c in cuts), n_req]
    row_bounds = [min(b * page, len(log)) for b in req_bounds]
    return [log.iloc[a:b].reset_index(drop=True) for a, b in zip(row_bounds[:-1], row_bounds[1:])]


# --------------------------------------------------------------------------- files


def schema_dict(name: str = "synthetic_feed") -> dict[str, Any]:
    """The schema of the generated log (valid for ``training.data.schema``)."""
    served_cross = INTERACTED_FEATURES
    feats: list[dict[str, Any]] = [
        {"name": "user_id", "type": "categorical", "side": "user", "min_count": 2, "dim": 16},
        {"name": "age_bucket", "type": "categorical", "side": "user", "dim": 4},
        {"name": "gender", "type": "categorical", "side": "user", "dim": 4},
        {"name": "city_tier", "type": "categorical", "side": "user", "dim": 4},
        {"name": "activity_level", "type": "categorical", "side": "user", "dim": 4},
        {"name": "purchasing_power", "type": "categorical", "side": "user", "dim": 4},
        {"name": "item_id", "type": "categorical", "side": "item", "min_count": 2, "dim": 16},
        {"name": "category_id", "type": "categorical", "side": "item", "dim": 8},
        {"name": "shop_id", "type": "categorical", "side": "item", "min_count": 2, "dim": 8},
        {"name": "brand_id", "type": "categorical", "side": "item", "min_count": 2, "dim": 8},
        {"name": "price", "type": "numeric", "side": "item", "transform": "log1p_standardize"},
        {"name": "price_bucket", "type": "categorical", "side": "item", "dim": 4},
        {
            "name": "tags",
            "type": "multi_categorical",
            "side": "item",
            "max_len": MAX_TAGS,
            "dim": 8,
        },
        {"name": "position", "type": "categorical", "side": "context", "dim": 4},
        {"name": "hour", "type": "categorical", "side": "context", "dim": 4},
        {"name": "device", "type": "categorical", "side": "context", "dim": 4},
        {
            "name": "user_cat_clicks_7d",
            "type": "numeric",
            "side": "cross",
            "transform": "log1p_standardize",
            "default": 0.0,
        },
        {
            "name": "user_shop_clicks_30d",
            "type": "numeric",
            "side": "cross",
            "transform": "log1p_standardize",
            "default": 0.0,
        },
        {
            "name": "user_shop_days_since_click",
            "type": "numeric",
            "side": "cross",
            "transform": "log1p_standardize",
            "default": NO_SHOP_CLICK_DAYS,
        },
        {"name": "dwell_time_s", "type": "numeric", "side": "cross"},
        {"name": "reviews_viewed", "type": "numeric", "side": "cross"},
        {"name": "chatted_with_seller", "type": "numeric", "side": "cross"},
        {"name": "added_to_cart", "type": "numeric", "side": "cross"},
    ]
    for f in feats:
        if f["name"] in ("dwell_time_s", "reviews_viewed"):
            f["transform"] = "log1p_standardize"
        if f["name"] in POST_CLICK_FEATURES:
            f["default"] = 0.0
    return {
        "version": 1,
        "name": name,
        "ids": {"request": "request_id", "user": "user_id", "item": "item_id", "timestamp": "ts"},
        "labels": {"click": {"column": "click"}, "conversion": {"column": "conversion"}},
        "tasks": {
            # position is known only after ranking: the booster may use it, the served net not
            "ctr": {"label": "click", "privileged": [*served_cross, "position"]},
            "cvr": {
                "label": "conversion",
                "where": "click",
                "privileged": [*POST_CLICK_FEATURES, *served_cross, "position"],
            },
        },
        "features": feats,
    }


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    # No pandas metadata: readers then see plain Arrow types (list<int64> tags), and a
    # pandas dtype string stored in the file cannot break a reader of another version.
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)


def compute_stats(
    frames: dict[str, pd.DataFrame], cfg: SynthConfig, logit_parts: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Summary of a generated log: sizes, rates and the oracle (true-probability) AUCs."""
    log = pd.concat([frames[s] for s in SPLITS], ignore_index=True)
    test = frames["test"]
    clicks = int(log["click"].sum())
    conversions = int(log["conversion"].sum())
    clicked_test = test[test["click"] == 1]
    by_pos = log.groupby("position")["click"].mean()
    parts = logit_parts

    def _num(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 6)

    return {
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
        "oracle_auc_click": _num(auc(test["click"].to_numpy(), test["p_click"].to_numpy())),
        "oracle_auc_conversion": _num(
            auc(clicked_test["conversion"].to_numpy(), clicked_test["p_conversion"].to_numpy())
        ),
        "ctr_by_position": {int(k): round(float(v), 5) for k, v in by_pos.items()},
        "click_logit_std": (
            {k: round(float(parts[k].std()), 4) for k in parts.columns} if parts is not None else {}
        ),
        "splits": {s: len(frames[s]) for s in SPLITS},
        "clicks_per_split": {s: int(frames[s]["click"].sum()) for s in SPLITS},
        "row_group_rows": ROW_GROUP_ROWS,
    }


def write(
    out_dir: str | Path,
    rows: int,
    seed: int = 0,
    *,
    users: int | None = None,
    items: int | None = None,
    page_size: int = 10,
    days: int = 14,
) -> dict[str, Any]:
    """Generate the log and write it to ``out_dir``.

    Writes ``train/valid/test.parquet`` (row groups of ``ROW_GROUP_ROWS``),
    ``users.parquet``, ``items.parquet``, ``schema.yaml`` and ``stats.json``.

    Returns:
        The content of ``stats.json``.

    Raises:
        SynthConfigError: an argument is out of range, or ``out_dir`` is a file.
    """
    started = time.perf_counter()
    cfg = SynthConfig(rows, seed, users, items, page_size, days)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SynthConfigError(f"out_dir {str(out)!r} exists and is not a directory")
    frames, parts = _generate(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SPLITS, "users", "items"):
        _write_parquet(frames[name], out / f"{name}.parquet")
    schema_path = out / "schema.yaml"
    header = (
        "# Schema of the synthetic feed written by `rocketrank synth` (see docs/SYNTHETIC.md).\n"
        "# Post-click features are 0 on unclicked rows; they are privileged (booster only).\n"
    )
    schema_path.write_text(header + yaml.safe_dump(schema_dict(), sort_keys=False))
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
    "LATENT",
    "ROW_GROUP_ROWS",
    "SPLITS",
    "SynthConfig",
    "SynthConfigError",
    "compute_stats",
    "generate",
    "schema_dict",
    "write",
]
