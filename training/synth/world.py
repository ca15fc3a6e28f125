"""The simulated population behind the synthetic feed (see :mod:`training.synth.generator`).

Users and items with observable features and latent vectors, the users' tastes
(category interests, favourite shops), the retrieval channels that fill a page,
and the background click history the interacted features are computed from.
Nothing here draws a click of the log; :mod:`training.synth.generator` does that.

Latent vectors: every component has unit variance, so ``u·v / sqrt(d)`` (the
affinity) has unit variance; the world's :class:`~training.synth.worlds.LatentModel`
shares say how much of a vector follows from observable features and how much
is idiosyncratic (then only the id can learn it). A world with several interests
per user takes the best interest's affinity, standardised (:func:`user_item_affinity`).
"""

# Over 400 lines: the population (users, items, latent vectors) is drawn in one seeded
# order that the generated log depends on.

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from training.synth.worlds import World, max_normal_moments

SECONDS_PER_DAY = 86_400
HISTORY_DAYS = 30  # simulated background history before the log starts
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
REQUEST_WEIGHT = (1.0, 4.0, 15.0, 50.0)  # how often each activity level opens the feed


# --------------------------------------------------------------------------- helpers


def unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """``n`` distinct random int64 ids in ``[low, high)``, in random order."""
    ids = np.unique(rng.integers(low, high, size=n + n // 10 + 16, dtype=np.int64))
    while len(ids) < n:  # only when the range is nearly exhausted
        more = rng.integers(low, high, size=n, dtype=np.int64)
        ids = np.unique(np.concatenate([ids, more]))
    return rng.permutation(ids)[:n]


def standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / (std if std > 0 else 1.0)


class GroupSampler:
    """Draws a member of a group with probability proportional to its weight.

    One ``searchsorted`` for a whole batch of draws: members are laid out by
    group on ``[g, g + 1)`` by their within-group cumulative weight. Draw only
    from groups with positive total weight (an empty group yields a member of
    the next group).
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

    def draw(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Members (indices into the constructor's arrays) for each group in ``groups``."""
        r = rng.random(len(groups))
        pos = np.searchsorted(self.keys, groups + r, side="right")
        return self.order[np.minimum(pos, len(self.order) - 1)]


class EventIndex:
    """Click events sorted by (key, time): window counts and last-event lookups.

    Times are seconds relative to ``LOG_START`` (negative = before the log).
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray, days: int) -> None:
        self.offset = HISTORY_DAYS * SECONDS_PER_DAY
        self.shift = int(self.offset + days * SECONDS_PER_DAY + 1).bit_length()
        self.mask = (1 << self.shift) - 1
        if len(keys) and int(np.max(keys)) >= 1 << (63 - self.shift):
            raise ValueError(
                f"history keys up to {int(np.max(keys))} do not fit next to {self.shift} time "
                "bits in int64: fewer users, shops or days"
            )
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


def affinity(u: np.ndarray, v: np.ndarray, ui: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Standardised latent affinity ``u·v / sqrt(d)`` for index pairs, in blocks."""
    out = np.empty(len(ui), dtype=np.float64)
    block = 1 << 18
    for s in range(0, len(ui), block):
        e = s + block
        out[s:e] = np.einsum("ij,ij->i", u[ui[s:e]], v[vi[s:e]], dtype=np.float64)
    return out / math.sqrt(u.shape[1])


def best_interest(
    interests: np.ndarray, v: np.ndarray, ui: np.ndarray, vi: np.ndarray
) -> np.ndarray:
    """Standardised ``max_k u_k·v / sqrt(d)`` over the interests ``[U, K, d]`` of each user.

    Each interest's affinity is N(0, 1) and independent given the item, so the
    moments of the maximum of K standard normals bring it back to unit variance.
    """
    k = interests.shape[1]
    best = np.max([affinity(interests[:, j], v, ui, vi) for j in range(k)], axis=0)
    mean, std = max_normal_moments(k)
    return (best - mean) / std


# --------------------------------------------------------------------------- the world


@dataclass
class Users:
    """The user population: features (``frame``) and the hidden truth about each user."""

    ids: np.ndarray  # int64 [U]
    frame: pd.DataFrame  # user_id + USER_FEATURES
    latent: np.ndarray  # float32 [U, d]
    purchasing_level: np.ndarray  # float64 [U] in [0, 1]
    clicks_per_day: np.ndarray  # float64 [U] background click rate
    request_weight: np.ndarray  # float64 [U]
    device: np.ndarray  # int64 [U] preferred device
    interests: np.ndarray | None = None  # float32 [U, K, d] when the world has K > 1 interests
    is_new: np.ndarray | None = None  # bool [U]: joins late (the world's new_user_share)


@dataclass
class Items:
    """The catalogue: features (``frame``) and the hidden truth about each item."""

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


def make_users(rng: np.random.Generator, n: int, spec: World) -> Users:
    """Demographics, activity, purchasing power, latent vectors and ids of ``n`` users.

    The draws of a one-interest world without new users come first and in the
    same order as ever, so the ``feed`` world's log does not change.
    """
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
    w = spec.latent.user_from_features
    latent = (math.sqrt(w) * from_features + math.sqrt(1 - w) * idiosyncratic).astype(np.float32)

    jitter = rng.lognormal(0.0, 0.3, size=n)
    clicks_per_day = np.asarray(BACKGROUND_CLICKS_PER_DAY)[activity] * jitter
    request_weight = np.asarray(REQUEST_WEIGHT)[activity] * rng.lognormal(0.0, 0.8, size=n)
    device = rng.choice(len(DEVICES), size=n, p=[0.55, 0.35, 0.10])
    ids = unique_ids(rng, n, 10**9, 10**12)
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
    interests = None
    if spec.interests > 1:  # every further interest is composed like the first one
        more = [latent]
        for _ in range(spec.interests - 1):
            tables = [rng.normal(size=(k, d)) for k in (7, 3, 5, 5)]
            part = (tables[0][age] + tables[1][gender] + tables[2][tier] + tables[3][power]) / 2.0
            own = rng.normal(size=(n, d))
            more.append((math.sqrt(w) * part + math.sqrt(1 - w) * own).astype(np.float32))
        interests = np.stack(more, axis=1)
    is_new = rng.random(n) < spec.new_user_share if spec.new_user_share > 0 else None
    return Users(
        ids=ids,
        frame=frame,
        latent=latent,
        purchasing_level=power / 4.0,
        clicks_per_day=clicks_per_day,
        request_weight=request_weight,
        device=device,
        interests=interests,
        is_new=is_new,
    )


def user_item_affinity(
    users: Users, item_latent: np.ndarray, ui: np.ndarray, vi: np.ndarray
) -> np.ndarray:
    """The world's affinity for index pairs: the dot product, or the best of the interests."""
    if users.interests is None:
        return affinity(users.latent, item_latent, ui, vi)
    return best_interest(users.interests, item_latent, ui, vi)


def make_items(rng: np.random.Generator, n: int, spec: World) -> Items:
    """``n`` items in categories, shops and brands, with prices, tags and latent vectors."""
    # ~100 lines on purpose: one sequence of RNG draws; splitting it invites reordering
    # them, which would change every generated log for a given seed.
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
    brand = GroupSampler(brand_cat, np.ones(n_brands), n_cat).draw(category, rng)

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
    tag_ids = unique_ids(rng, len(tag_latent), 100_000, 1_000_000)
    tags = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(n_tags)]).astype(np.int32)),
        pa.array(tag_ids[tag_index[in_bag]], type=pa.int64()),
    )

    parts = (
        (spec.latent.item_category, cat_latent[category]),
        (spec.latent.item_shop, shop_latent[shop]),
        (spec.latent.item_brand, brand_latent[brand]),
        (spec.latent.item_tags, tag_part),
    )
    rest = 1.0 - sum(w for w, _ in parts)
    latent = math.sqrt(rest) * rng.normal(size=(n, d))
    for w, part in parts:
        latent += math.sqrt(w) * part

    popularity = rng.lognormal(0.0, spec.popularity_sigma, size=n) * shop_size[shop] ** 0.3
    shop_quality = rng.normal(size=n_shops)
    quality = standardise(
        rng.normal(size=n) + 0.5 * shop_quality[shop] + 0.4 * standardise(np.log(popularity))
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

    ids = unique_ids(rng, n, 10**10, 10**12)
    cat_ids = unique_ids(rng, n_cat, 10**7, 10**8)
    shop_ids = unique_ids(rng, n_shops, 10**8, 10**11)
    brand_ids = unique_ids(rng, n_brands, 10**6, 10**10)
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
    return Items(
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
class Tastes:
    """What a user tends to look at: category interests and favourite shops."""

    category: GroupSampler  # groups = users, members = user * C + category
    favourite_shops: np.ndarray  # int64 [U, FAVOURITE_SHOPS]
    taste: np.ndarray  # float64 [U, C]: the private N(0, 1) taste per (user, category)


def _best_of(per_interest: list[np.ndarray]) -> np.ndarray:
    """The one-interest affinity as is, or the standardised best over the interests."""
    if len(per_interest) == 1:
        return per_interest[0]
    mean, std = max_normal_moments(len(per_interest))
    return (np.max(per_interest, axis=0) - mean) / std


def make_tastes(rng: np.random.Generator, users: Users, items: Items, spec: World) -> Tastes:
    """Category interests (affinity + a private taste + category size) and favourite shops."""
    n_users, n_cat = len(users.ids), items.n_categories
    vectors = [users.latent] if users.interests is None else list(users.interests.swapaxes(0, 1))
    cat_traffic = np.bincount(items.category, items.popularity, minlength=n_cat)
    cat_affinity = _best_of(
        [(u @ items.category_latent.T) / math.sqrt(LATENT_DIM) for u in vectors]
    )
    taste = rng.normal(size=(n_users, n_cat))
    logits = (
        spec.latent.interest_affinity * cat_affinity
        + spec.latent.interest_taste * taste
        + np.log(np.maximum(cat_traffic / cat_traffic.sum(), 1e-300))[None, :]
    )
    share = np.exp(logits - logits.max(axis=1, keepdims=True))
    share[:, cat_traffic == 0] = 0.0  # a category without items is never browsed
    groups = np.repeat(np.arange(n_users), n_cat)
    category = GroupSampler(groups, share.ravel(), n_users)

    # favourite shops: among popular shops, the ones the user likes best
    shop_traffic = np.bincount(items.shop, items.popularity, minlength=items.n_shops)
    candidates = rng.choice(
        items.n_shops, size=(n_users, 4 * FAVOURITE_SHOPS), p=shop_traffic / shop_traffic.sum()
    )
    shop_vectors = items.shop_latent[candidates]
    like = _best_of(
        [np.einsum("ud,ukd->uk", u, shop_vectors) / math.sqrt(LATENT_DIM) for u in vectors],
    ) + rng.gumbel(size=candidates.shape)
    best = np.argsort(-like, axis=1)[:, :FAVOURITE_SHOPS]
    return Tastes(
        category=category,
        favourite_shops=np.take_along_axis(candidates, best, 1),
        taste=taste,
    )


class ItemPicker:
    """Retrieval channels of the simulated feed (and of the background history)."""

    def __init__(self, items: Items, tastes: Tastes) -> None:
        self.items, self.tastes = items, tastes
        self.n_cat = items.n_categories
        self.by_category = GroupSampler(items.category, items.popularity, self.n_cat)
        self.by_shop = GroupSampler(items.shop, items.popularity, items.n_shops)
        self.popular = GroupSampler(np.zeros(len(items.ids), np.int64), items.popularity, 1)

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


def background_history(
    rng: np.random.Generator, days: int, users: Users, items: Items, picker: ItemPicker
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clicks of traffic the log does not show: (user, item, time) over history + log days.

    The user clicks, among a few retrieved items, the one with the best affinity
    (Gumbel noise), so the history follows affinity without revealing it exactly.
    """
    span = HISTORY_DAYS + days
    n_events = rng.poisson(users.clicks_per_day * span)
    user = np.repeat(np.arange(len(users.ids)), n_events)
    times = rng.integers(-HISTORY_DAYS * SECONDS_PER_DAY, days * SECONDS_PER_DAY, len(user))
    candidates = np.stack([picker.mixed(user, rng) for _ in range(4)], axis=1)
    score = np.stack(
        [user_item_affinity(users, items.latent, user, candidates[:, k]) for k in range(4)], axis=1
    ) + rng.gumbel(size=candidates.shape)
    item = candidates[np.arange(len(user)), np.argmax(score, axis=1)]
    return user, item, times
